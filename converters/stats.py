"""Per-site activation statistics (the comparing-rectified-linearity paper's metrics).

For each site, over a set of inputs (every image and every spatial position is a sample of its
channel's unit): activation probability p_u per unit, lifetime sparsity (mean p_u), dispersion
(std of p_u) and dead fraction (units with p_u = 0).

Works on an original model (functional ReLUs included) and on a converted one: we copy the fx
graph and add a probe right after each site's pre-activation node, in a GraphModule that shares
the model's modules, so the numbers come from the very modules being trained.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import fx, nn

from .site import META_KEY, Site


@dataclass
class SiteStats:
    index: int
    name: str
    units: int
    samples_per_unit: int
    activation_probability: list[float]
    lifetime_sparsity: float
    dispersion: float
    dead_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


class _Counter:
    """Active-sample counts per unit for one site."""

    def __init__(self):
        self.active: torch.Tensor | None = None
        self.samples = 0

    def add(self, x: torch.Tensor, point) -> None:
        with torch.no_grad():
            if isinstance(point, torch.Tensor) and point.numel() > 1:
                shape = [1] * x.ndim
                shape[1] = -1
                point = point.reshape(shape)
            active = x > point
            dims = [d for d in range(x.ndim) if d != 1]
            counts = active.sum(dim=dims, dtype=torch.int64) if dims else active.to(torch.int64)
            self.active = counts if self.active is None else self.active + counts
            self.samples += x.numel() // max(x.shape[1], 1)

    def result(self, site: Site) -> SiteStats:
        p = (self.active.double() / max(self.samples, 1)).cpu()
        units = p.numel()
        return SiteStats(
            index=site.index,
            name=site.name,
            units=units,
            samples_per_unit=self.samples,
            activation_probability=[float(v) for v in p],
            lifetime_sparsity=float(p.mean()),
            dispersion=float(p.std(unbiased=False)) if units > 1 else 0.0,
            dead_fraction=float((p == 0).double().mean()),
        )


class _Probe(nn.Module):
    """Graph probe: counts where the pre-activation exceeds the site's rectification point."""

    def __init__(self, counter: _Counter, point_source: nn.Module | None):
        super().__init__()
        self.counter = counter
        # Held outside _modules so the probe owns no parameters of the model.
        self.__dict__["point_source"] = point_source

    def forward(self, x):
        source = self.point_source
        self.counter.add(x, _point(source) if source is not None else 0.0)


def _sites_and_graph(model: nn.Module, leaf_modules) -> tuple[fx.GraphModule, list[Site]]:
    from .sites import locate_sites
    from .tracing import trace

    if isinstance(model, fx.GraphModule) and META_KEY in model.meta:
        return model, [Site.from_dict(d) for d in model.meta[META_KEY]["sites"]]
    # An original model: trace it in place (GraphModule shares its modules; nothing is changed).
    types = tuple(x for x in leaf_modules if isinstance(x, type))
    names = tuple(x for x in leaf_modules if isinstance(x, str))
    gm = trace(model, types, names)
    return gm, locate_sites(gm, model)


def _instrument(gm: fx.GraphModule, sites: list[Site], counters: list[_Counter]):
    """A GraphModule sharing gm's modules, with probes on graph sites; hooks for inner sites."""
    graph = copy.deepcopy(gm.graph)
    nodes = {n.name: n for n in graph.nodes}
    modules: dict[str, nn.Module] = {}
    hooks = []
    for site, counter in zip(sites, counters):
        if site.call == "inner":
            inner = gm.get_submodule(site.name)
            point_source = inner
            hooks.append(inner.register_forward_pre_hook(
                lambda m, args, c=counter, s=point_source: c.add(args[0], _point(s))
            ))
            continue
        point_source = _point_source(gm, site)
        probe_name = f"_reluswap_probe_{site.index}"
        modules[probe_name] = _Probe(counter, point_source)
        with graph.inserting_after(nodes[site.input_node]):
            graph.call_module(probe_name, (nodes[site.input_node],))
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in modules:
            modules[node.target] = gm.get_submodule(node.target)
        elif node.op == "get_attr":
            modules[node.target] = _get_attr(gm, node.target)
    return fx.GraphModule(modules, graph), hooks


def _point(module: nn.Module):
    point = module.rectification_point() if hasattr(module, "rectification_point") else 0.0
    return point.detach() if isinstance(point, torch.Tensor) else point


def _point_source(gm: fx.GraphModule, site: Site) -> nn.Module | None:
    """The module whose rectification point applies: the site's activation when replaced."""
    if site.replaced and site.replacement != "convrelu":
        return gm.get_submodule(site.name)
    return None  # ReLU, ReLU6 and ConvReLU sites: a unit is active where x > 0


def _get_attr(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _first_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "x", "pixel_values"):
            if key in batch:
                return batch[key]
    raise TypeError("batches must be tensors, (inputs, targets) pairs, or dicts with an 'image' or 'input' key")


def activation_stats(
    model: nn.Module,
    batches: Iterable,
    leaf_modules: Iterable = (),
    max_batches: int | None = None,
    device: torch.device | str | None = None,
) -> list[SiteStats]:
    """Statistics for every site of `model` (original or converted), in execution order.

    The model runs in eval mode under no_grad and is put back in its own mode afterwards.
    """
    gm, sites = _sites_and_graph(model, tuple(leaf_modules))
    counters = [_Counter() for _ in sites]
    instrumented, hooks = _instrument(gm, sites, counters)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    instrumented.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                instrumented(_first_tensor(batch).to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if sites and counters[0].active is None:
        raise ValueError("activation_stats got no batches")
    return [c.result(s) for s, c in zip(sites, counters) if c.active is not None]
