"""Finding every ReLU call site in a traced model, in execution order, with stable names.

Call sites, not modules: torchvision's ResNet blocks call one nn.ReLU two or three times, and
googlenet/inception only call F.relu. fx node order equals eager execution order, so sites are
numbered in node order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .activations import ConvReLU2d, LearnableActivation, convrelu_ineligible_reason
from .blocks import detect_blocks
from .site import Site
from .tracing import private_copy, propagate_shapes, trace

_RELU_FUNCTIONS = {torch.relu: False, torch.relu_: True, F.relu: None, F.relu_: True}
_RELU6_FUNCTIONS = {F.relu6: None}
_RELU_METHODS = {"relu": False, "relu_": True}


def _kwarg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def relu_call(node: fx.Node, gm: fx.GraphModule) -> tuple[str, str, bool] | None:
    """(kind, call, inplace) when `node` calls ReLU or ReLU6, else None.

    ReLU6 is not ReLU: nn.ReLU6 subclasses Hardtanh, so modules are matched by exact type.
    """
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if type(mod) is nn.ReLU:
            return "relu", "module", bool(mod.inplace)
        if type(mod) is nn.ReLU6:
            return "relu6", "module", bool(mod.inplace)
        return None
    if node.op == "call_function":
        target = node.target
        if target in _RELU_FUNCTIONS:
            fixed = _RELU_FUNCTIONS[target]
            inplace = fixed if fixed is not None else bool(_kwarg(node, 1, "inplace", False))
            return "relu", "function", inplace
        if target in _RELU6_FUNCTIONS:
            return "relu6", "function", bool(_kwarg(node, 1, "inplace", False))
        if target is F.hardtanh and _kwarg(node, 1, "min_val", -1.0) == 0 and _kwarg(node, 2, "max_val", 1.0) == 6:
            return "relu6", "function", bool(_kwarg(node, 3, "inplace", False))
        return None
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return "relu", "method", _RELU_METHODS[node.target]
    return None


def _stack_paths(node: fx.Node) -> list[str]:
    return [path for path, _type in (node.meta.get("nn_module_stack") or {}).values()]


def calling_scope(node: fx.Node) -> str:
    """The module whose forward makes the call (for a module call, the one that calls it)."""
    paths = _stack_paths(node)
    if node.op == "call_module":
        paths = paths[:-1]  # the last entry is the called module itself
    return paths[-1] if paths else ""


def _is_converter_module(mod: nn.Module) -> bool:
    return isinstance(mod, (LearnableActivation, ConvReLU2d))


def inner_relus(mod: nn.Module) -> list[tuple[str, str]]:
    """(relative path, kind) of ReLU modules inside a leaf module that fx does not enter."""
    found = []
    for rel, child in mod.named_modules():
        if rel and type(child) is nn.ReLU:
            found.append((rel, "relu"))
        elif rel and type(child) is nn.ReLU6:
            found.append((rel, "relu6"))
    return found


class _Namer:
    """Site names: `<scope>.<attribute>`, `_k` for the k-th repeat; never an existing other module."""

    def __init__(self, model: nn.Module):
        self.modules = dict(model.named_modules())
        self.used: set[str] = set()
        self.counts: dict[str, int] = {}

    def name(self, base: str, own_module: str | None) -> str:
        k = self.counts.get(base, 0)
        while True:
            candidate = base if k == 0 else f"{base}_{k}"
            k += 1
            taken = candidate in self.used or (candidate in self.modules and candidate != own_module)
            if not taken:
                self.counts[base] = k
                self.used.add(candidate)
                return candidate


def _join(scope: str, attr: str) -> str:
    return f"{scope}.{attr}" if scope else attr


def _site_base_name(node: fx.Node, call: str, kind: str, scope: str) -> str:
    if call == "module":
        path = str(node.target)
        if scope == "" or path.startswith(scope + "."):
            return path
        return _join(scope, path.rsplit(".", 1)[-1])
    return _join(scope, "relu6" if kind == "relu6" else "relu")


def locate_sites(gm: fx.GraphModule, model: nn.Module | None = None) -> list[Site]:
    """Every ReLU call site of a traced model, named and in execution order (no shapes yet)."""
    namer = _Namer(model if model is not None else gm)
    sites: list[Site] = []
    for node in gm.graph.nodes:
        found = relu_call(node, gm)
        if found is not None:
            kind, call, inplace = found
            scope = calling_scope(node)
            module = str(node.target) if call == "module" else None
            input_node = node.args[0] if node.args else node.kwargs.get("input")
            sites.append(
                Site(
                    index=len(sites),
                    name=namer.name(_site_base_name(node, call, kind, scope), module),
                    kind=kind,
                    call=call,
                    scope=scope,
                    module=module,
                    inplace=inplace,
                    node=node.name,
                    input_node=input_node.name if isinstance(input_node, fx.Node) else "",
                )
            )
        elif node.op == "call_module":
            leaf = gm.get_submodule(node.target)
            if _is_converter_module(leaf):
                continue
            for rel, kind in inner_relus(leaf):
                path = f"{node.target}.{rel}"
                relu = leaf.get_submodule(rel)
                sites.append(
                    Site(
                        index=len(sites),
                        name=namer.name(path, path),
                        kind=kind,
                        call="inner",
                        scope=str(node.target),
                        module=path,
                        inplace=bool(relu.inplace),
                        node=node.name,
                    )
                )
    for site, block in zip(sites, detect_blocks([s.scope for s in sites]).assign(sites)):
        site.block = block
    return sites


def _consumers(node: fx.Node, gm: fx.GraphModule) -> list[fx.Node]:
    """Users of `node`, looking through nn.Identity placeholders."""
    out = []
    for user in node.users:
        if user.op == "call_module" and type(gm.get_submodule(user.target)) is nn.Identity:
            out.extend(_consumers(user, gm))
        else:
            out.append(user)
    return out


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    target = node.target
    return getattr(target, "__name__", str(target))


def _mark_convrelu(site: Site, gm: fx.GraphModule, nodes: dict[str, fx.Node], calls: dict[str, int]) -> None:
    if site.call == "inner":
        site.convrelu_reason = f"inside leaf module '{site.scope}': its consumers are not visible"
        return
    convs, refused = [], []
    for user in _consumers(nodes[site.node], gm):
        if user.op != "call_module":
            refused.append(f"{_describe(user)} (not a Conv2d)")
            continue
        mod = gm.get_submodule(user.target)
        reason = convrelu_ineligible_reason(mod)
        if reason is None and calls[user.target] > 1:
            reason = "the conv is called at several sites"
        if reason is None:
            convs.append(str(user.target))
        else:
            refused.append(f"{user.target} ({reason})")
    site.convrelu = bool(convs)
    site.convrelu_convs = convs
    site.convrelu_keeps_relu = bool(convs) and bool(refused)
    if not convs:
        site.convrelu_reason = "no consumer is an eligible Conv2d: " + (", ".join(refused) or "no consumers")


def annotate_sites(sites: list[Site], gm: fx.GraphModule, inner_shapes: dict[str, tuple]) -> None:
    """Add shapes, channels and ConvReLU eligibility (needs propagated shapes)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    for site in sites:
        if site.call == "inner":
            shape = inner_shapes.get(site.module)
        else:
            meta = nodes[site.input_node].meta.get("tensor_meta") if site.input_node else None
            shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        site.shape = shape
        site.channels = shape[1] if shape is not None and len(shape) >= 2 else None
        _mark_convrelu(site, gm, nodes, calls)


def _record_inner_shapes(gm: fx.GraphModule, sites: list[Site], example_inputs: tuple) -> dict[str, tuple]:
    """Shapes seen by ReLUs inside leaf modules; refuses (by omission) ones called other than once."""
    shapes: dict[str, list[tuple]] = {}
    handles = []
    for site in sites:
        if site.call == "inner":
            mod = gm.get_submodule(site.module)
            calls = shapes.setdefault(site.module, [])
            handles.append(mod.register_forward_pre_hook(lambda m, a, calls=calls: calls.append(tuple(a[0].shape))))
    try:
        propagate_shapes(gm, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return {path: seen[0] for path, seen in shapes.items() if len(seen) == 1}


def trace_sites(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    leaf_modules: Iterable = (),
) -> tuple[fx.GraphModule, list[Site]]:
    """Trace (a private copy of) `model` and return the GraphModule with its annotated sites."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    leaf_modules = tuple(leaf_modules)
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    leaf_names = tuple(x for x in leaf_modules if isinstance(x, str))
    source = private_copy(model)
    gm = trace(source, leaf_types, leaf_names, class_name=type(model).__name__)
    sites = locate_sites(gm, source)
    inner_shapes = _record_inner_shapes(gm, sites, example_inputs)
    annotate_sites(sites, gm, inner_shapes)
    return gm, sites


def find_sites(model: nn.Module, example_inputs: tuple | torch.Tensor, leaf_modules: Iterable = ()) -> list[Site]:
    """Every ReLU call site of `model` in execution order (the model is not modified).

    Module calls (one module called at several sites gives several sites), F.relu, torch.relu,
    relu_, x.relu(), x.relu_(), ReLU6 as kind "relu6", and ReLUs inside leaf modules fx does not
    enter. Each site has a deterministic name, its calling scope, channel count, block and
    whether ConvReLU can take it.
    """
    return trace_sites(model, example_inputs, leaf_modules)[1]
