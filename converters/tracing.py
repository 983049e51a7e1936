"""torch.fx tracing with the leaves this project needs.

Why fx and not torch.export: an exported graph fixes BatchNorm to eval mode, and fine-tuning
BatchNorm is the point. fx keeps every leaf module a module, so BN still switches train/eval.

Leaves: everything torch.fx already treats as a leaf (torch.nn layers, ReLU and ReLU6 among
them), our own activation modules, modules that branch on `self.training` (tracing through them
would freeze one branch), and timm's published no-trace lists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import fx, nn

from .activations import ConvReLU2d, LearnableActivation


class TraceError(RuntimeError):
    """torch.fx could not trace the model; names the module where it failed."""


def _training_branching_types() -> tuple[type, ...]:
    """Module types whose forward branches on self.training (kept as leaves)."""
    types: list[type] = []
    try:  # torchvision's StochasticDepth: identity in eval, random drop in train
        from torchvision.ops import StochasticDepth

        types.append(StochasticDepth)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return tuple(types)


def _timm_notrace() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    """timm's own lists of modules and functions that symbolic tracing must not enter."""
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # pragma: no cover - timm is a dependency
        return (), ()
    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


class SiteTracer(fx.Tracer):
    """An fx tracer that reports the module it failed in and honours extra leaves."""

    def __init__(self, leaf_types: Iterable[type] = (), leaf_names: Iterable[str] = ()):
        timm_modules, timm_functions = _timm_notrace()
        super().__init__(autowrap_functions=timm_functions)
        self.leaf_types = (
            nn.ReLU,
            nn.ReLU6,
            LearnableActivation,
            ConvReLU2d,
            *_training_branching_types(),
            *timm_modules,
            *tuple(leaf_types),
        )
        self.leaf_names = frozenset(leaf_names)
        self.failed_module: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except TraceError:
            raise
        except Exception:
            # The innermost failing module is recorded first; outer frames keep it.
            if self.failed_module is None:
                self.failed_module = self.path_of_module(m) or "<root>"
            raise


def trace(
    model: nn.Module,
    leaf_types: Iterable[type] = (),
    leaf_names: Iterable[str] = (),
    class_name: str | None = None,
) -> fx.GraphModule:
    """Trace `model` (which must already be a private copy: the GraphModule shares its leaves).

    The trace is taken in eval mode so train-only branches (googlenet's aux heads) stay out of
    the graph; the returned module is put back in the model's own mode. Leaf modules keep
    switching between train and eval as usual.
    """
    was_training = model.training
    model.eval()
    tracer = SiteTracer(leaf_types, leaf_names)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = tracer.failed_module
        if where is None or where == "<root>":
            where = f"the forward of {type(model).__name__}"
        else:
            where = f"module '{where}' ({type(model.get_submodule(where)).__name__})"
        raise TraceError(
            f"torch.fx cannot trace {where}: {type(err).__name__}: {err}. "
            "Make the module a leaf (leaf_modules=[its type or its name]) if it contains no ReLU "
            "you want to convert."
        ) from err
    gm = fx.GraphModule(model, graph, class_name or type(model).__name__)
    gm.train(was_training)
    model.train(was_training)
    return gm


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy, so the caller's model is never touched by tracing or surgery."""
    return copy.deepcopy(model)


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    """Record tensor shapes on every node (node.meta['tensor_meta']) without grad, in eval mode."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        gm.train(was_training)
