"""In-place hazards: when replacing an in-place ReLU with an out-of-place op changes the function.

An in-place ReLU overwrites its input. Anything that reads that tensor (or a view of the same
storage) after the ReLU saw rectified values; after replacement it would see the pre-activation.
We refuse such sites instead of silently changing the model.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

# Ops whose result may share storage with their first argument (conservative: reshape,
# flatten and contiguous can be views, so they count).
_VIEW_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "narrow", "transpose", "permute",
    "squeeze", "unsqueeze", "expand", "expand_as", "chunk", "split", "unbind", "t", "contiguous",
    "__getitem__", "detach", "as_strided", "unfold", "select", "movedim", "swapaxes", "diagonal",
}  # fmt: skip
_VIEW_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.narrow, torch.transpose, torch.permute,
    torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind, torch.t, torch.detach,
    torch.movedim, torch.swapaxes, torch.diagonal, torch.select,
}  # fmt: skip
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
_ALIAS_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten)


class InplaceHazardError(RuntimeError):
    """An in-place ReLU whose input is read again afterwards cannot be replaced out of place."""


def _returns_alias(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Does `node`'s output share storage with its first input?"""
    if node.op == "call_method":
        return node.target in _VIEW_METHODS or str(node.target).endswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.target in _VIEW_FUNCTIONS or node.target in _INPLACE_FUNCTIONS or name.endswith("_")
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return isinstance(mod, _ALIAS_MODULES) or bool(getattr(mod, "inplace", False))
    return False


def _first_input(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
    return arg if isinstance(arg, fx.Node) else None


def alias_group(start: fx.Node, gm: fx.GraphModule, exclude: fx.Node) -> set[fx.Node]:
    """`start`, the tensor it is a view of, and every view or in-place result derived from them."""
    base = start
    while _returns_alias(base, gm) and _first_input(base) is not None:
        base = _first_input(base)
    group, todo = {base}, [base]
    while todo:
        node = todo.pop()
        for user in node.users:
            if user is not exclude and user not in group and _returns_alias(user, gm) and _first_input(user) is node:
                group.add(user)
                todo.append(user)
    return group


def execution_order(gm: fx.GraphModule) -> dict[fx.Node, int]:
    return {n: i for i, n in enumerate(gm.graph.nodes)}


def later_readers(site_node: fx.Node, input_node: fx.Node, gm: fx.GraphModule, allowed: set[fx.Node] = frozenset(),
                  order: dict[fx.Node, int] | None = None) -> list[fx.Node]:
    """Nodes that read the site's input (or an alias of it) after the in-place site runs.
    `order` (execution_order(gm)) may be passed in when checking many sites of one graph."""
    order = order if order is not None else execution_order(gm)
    group = alias_group(input_node, gm, exclude=site_node)
    here = order[site_node]
    readers = []
    for member in group:
        for user in member.users:
            if user is site_node or user in group or user in allowed:
                continue
            if order[user] > here:
                readers.append(user)
    return sorted(set(readers), key=order.__getitem__)


def check_inplace_hazard(site, gm: fx.GraphModule, nodes: dict[str, fx.Node], allowed: set[fx.Node] = frozenset(),
                         order: dict[fx.Node, int] | None = None) -> None:
    """Raise InplaceHazardError when replacing `site` out of place would change the function."""
    if not site.inplace or site.call == "inner":
        return
    readers = later_readers(nodes[site.node], nodes[site.input_node], gm, allowed, order)
    if readers:
        names = ", ".join(r.name if r.op != "call_module" else str(r.target) for r in readers)
        raise InplaceHazardError(
            f"site {site.name!r} is an in-place ReLU whose input is read again afterwards (by {names}); "
            "replacing it with an out-of-place activation would change what those reads see. "
            "Leave this site out of the strategy (e.g. names:... or block:...) or make that ReLU out of place."
        )
