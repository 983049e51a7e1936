"""convert(): replace the selected ReLU call sites of a model with learnable activations.

Every replaced call site gets its own module (and parameters), registered at the site's name, so
`layer1.0.relu_1` is both the site and the state_dict prefix of its parameters. The input model
is never modified: we trace a deep copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .activations import ConvReLU2d, create_activation
from .blocks import detect_blocks
from .catalog import get_info
from .inplace import check_inplace_hazard, execution_order
from .site import META_KEY, Site
from .sites import relu_call, trace_sites
from .spec import ConversionSpec, attach_spec
from .strategy import parse_strategy, select_sites
from .vocabulary import FALLBACKS, INITS, check_choice, check_options


@dataclass
class Conversion:
    """The converted model, every site (replaced or not, with the reason) and the spec."""

    model: fx.GraphModule
    sites: list[Site]
    spec: ConversionSpec

    @property
    def replaced(self) -> list[Site]:
        return [s for s in self.sites if s.replaced]

    def added_parameters(self) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[k].numel() for s in self.replaced for k in s.parameters)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Install `module` at `path`, creating bare parents the GraphModule did not copy."""
    *parents, leaf = path.split(".")
    parent = root
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _site_dtype(site: Site, nodes: dict[str, fx.Node]) -> torch.dtype:
    node = nodes.get(site.input_node)
    meta = node.meta.get("tensor_meta") if node is not None else None
    return getattr(meta, "dtype", torch.float32)


def _plain_relu_node(node: fx.Node, kind: str, inplace: bool) -> None:
    """Turn a call into functional ReLU/ReLU6 (its module path was taken by a replaced site)."""
    x = node.args[0] if node.args else node.kwargs["input"]
    node.op = "call_function"
    node.target = F.relu6 if kind == "relu6" else F.relu
    node.args = (x,)
    node.kwargs = {"inplace": inplace}


def _plan(site: Site, activation: str, fallback: str | None, granularity: str | None) -> tuple[str | None, str | None]:
    """(activation to use, reason to skip) for a selected site."""
    info = get_info(activation)
    if info.kind == "conv" and not site.convrelu:
        if fallback == "adarelu":
            return _plan(site, "adarelu", None, None)
        return None, f"convrelu cannot apply: {site.convrelu_reason}"
    if site.kind == "relu6" and not info.supports_cap:
        return None, f"ReLU6 site: {activation} has no form capped at 6"
    channel_wise = (granularity or info.default_granularity) == "channel"
    if info.kind != "conv" and info.params and channel_wise and site.channels is None:
        return None, "no channel dimension in the site's input"
    if site.call == "inner" and site.shape is None:
        return None, f"the ReLU inside leaf module '{site.scope}' is not called exactly once per call"
    return activation, None


def _calibration_dead_fractions(model, calibration, leaf_modules):
    from .stats import activation_stats

    def compute() -> dict[str, float]:
        return {s.name: s.dead_fraction for s in activation_stats(model, calibration, leaf_modules=leaf_modules)}

    return compute


def convert(
    model: nn.Module,
    activation: str,
    strategy: str = "all",
    example_inputs: tuple | torch.Tensor | None = None,
    init: str = "identity",
    granularity: str | None = None,
    fallback: str | None = None,
    calibration: Iterable | None = None,
    leaf_modules: Iterable = (),
    convrelu_impl: str = "auto",
    sites: Iterable[str] | None = None,
    **options,
) -> Conversion:
    """Return the converted model (a torch.fx GraphModule), all sites, and the spec.

    activation: a catalogue name (converters.catalog). strategy: see converters.strategy.GRAMMAR.
    init: "identity" (the converted model computes what the original computed) or "paper".
    granularity: "channel" or "layer" where the activation accepts both (default: the paper's).
    fallback: for convrelu, what to do at sites no Conv2d consumes: "skip" (default) or "adarelu".
    calibration: batches for dead:R. sites: explicit site names (overrides strategy; used when
    rebuilding from a saved spec). options: fixed hyper-parameters (leaky_relu negative_slope).
    """
    info = get_info(activation)
    if example_inputs is None:
        raise ValueError("example_inputs is required: shapes decide channel counts and ConvReLU eligibility")
    check_choice("init", init, INITS)
    granularity = info.check_granularity(granularity)
    if fallback is not None:
        check_choice("fallback", fallback, FALLBACKS)
    check_options(activation, options, info.options)
    clauses = parse_strategy(strategy)

    gm, all_sites = trace_sites(model, example_inputs, leaf_modules)
    if sites is not None:
        wanted = list(sites)
        known = {s.name for s in all_sites}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise ValueError(f"sites not found in this model: {', '.join(missing[:8])}")
        wanted_set = set(wanted)
        chosen = [s for s in all_sites if s.name in wanted_set]
    else:
        dead = _calibration_dead_fractions(model, calibration, leaf_modules) if calibration is not None else None
        blocks = detect_blocks([s.scope for s in all_sites])
        chosen = select_sites(all_sites, clauses, blocks, dead)

    nodes = {n.name: n for n in gm.graph.nodes}
    plans: list[tuple[Site, str]] = []
    for site in chosen:
        site.selected = True
        use, reason = _plan(site, activation, fallback, granularity)
        if use is None:
            site.skip_reason = reason
        else:
            plans.append((site, use))

    # Eligible convs are called exactly once (sites.py), so their target names their node.
    module_nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    # Refuse hazards before touching anything: the ConvReLU convs read the pre-activation on purpose.
    order = execution_order(gm)
    for site, use in plans:
        allowed = {module_nodes[t] for t in site.convrelu_convs} if use == "convrelu" else set()
        check_inplace_hazard(site, gm, nodes, allowed, order)

    device = _model_device(gm)
    for site, use in plans:
        if use == "convrelu":
            _fuse_convrelu(gm, site, nodes, module_nodes, init, convrelu_impl, device)
        else:
            act_options = options if use == activation else {}
            act_granularity = granularity if use == activation else None
            act = create_activation(
                use, site.channels or 1, init=init, granularity=act_granularity,
                cap=6.0 if site.kind == "relu6" else None, **act_options,
            ).to(device=device, dtype=_site_dtype(site, nodes))
            _set_module(gm, site.name, act)
            if site.call != "inner":
                node = nodes[site.node]
                node.op, node.target = "call_module", site.name
                node.args, node.kwargs = (nodes[site.input_node],), {}
            site.parameters = [f"{site.name}.{p}" for p, _ in act.named_parameters()]
        site.replaced, site.replacement = True, use

    # Call sites left alone whose module path a replaced site now holds call functional ReLU.
    for site in all_sites:
        if not site.replaced and site.call == "module":
            node = nodes[site.node]
            if relu_call(node, gm) is None:
                _plain_relu_node(node, site.kind, site.inplace)

    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()

    spec = ConversionSpec(
        activation=activation,
        strategy=strategy if sites is None else "names:" + ",".join(sorted(set(sites))),
        init=init,
        granularity=granularity,
        fallback=fallback,
        options=dict(options),
        replaced=[(s.name, s.replacement) for s in all_sites if s.replaced],
    )
    attach_spec(gm, spec)
    gm.meta[META_KEY] = {"sites": [s.to_dict() for s in all_sites], "spec": spec.to_dict()}
    gm.train(model.training)
    return Conversion(gm, all_sites, spec)


def _fuse_convrelu(gm: fx.GraphModule, site: Site, nodes: dict[str, fx.Node], module_nodes: dict[str, fx.Node],
                   init: str, impl: str, device) -> None:
    """Each consuming Conv2d becomes a ConvReLU2d reading the pre-activation; the ReLU stays only
    for consumers that are not convs (made out of place, so the convs still see x)."""
    relu = nodes[site.node]
    x = nodes[site.input_node]
    site.parameters = []
    for target in site.convrelu_convs:
        conv = gm.get_submodule(target)
        fused = ConvReLU2d.from_conv(conv, init=init, impl=impl).to(device)
        fused.site_name = site.name
        _set_module(gm, target, fused)
        conv_node = module_nodes[target]
        conv_node.args = (x, *conv_node.args[1:])
        site.parameters.append(f"{target}.theta")
    _drop_dead_identities(gm, relu)
    if relu.users:
        _plain_relu_node(relu, site.kind, inplace=False)
    else:
        gm.graph.erase_node(relu)


def _drop_dead_identities(gm: fx.GraphModule, node: fx.Node) -> None:
    for user in list(node.users):
        if user.op == "call_module" and type(gm.get_submodule(user.target)) is nn.Identity:
            _drop_dead_identities(gm, user)
            if not user.users:
                gm.graph.erase_node(user)


def convert_from_spec(model: nn.Module, spec: ConversionSpec | dict, example_inputs, leaf_modules: Iterable = ()) -> Conversion:
    """Rebuild a conversion exactly (same sites, same parameter names) from a saved spec."""
    if isinstance(spec, dict):
        spec = ConversionSpec.from_dict(spec)
    fallback = "adarelu" if any(act != spec.activation for _, act in spec.replaced) else spec.fallback
    conversion = convert(
        model,
        spec.activation,
        example_inputs=example_inputs,
        init=spec.init,
        granularity=spec.granularity,
        fallback=fallback,
        leaf_modules=leaf_modules,
        sites=[name for name, _ in spec.replaced],
        **spec.options,
    )
    conversion.spec.strategy = spec.strategy
    conversion.model.meta[META_KEY]["spec"] = conversion.spec.to_dict()
    return conversion
