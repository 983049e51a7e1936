"""What fine-tuning trains, and the optimizer parameter groups it needs.

Modes:
- "bn+act": the papers' fine-tune. BatchNorm affine parameters and running statistics, plus the
  new activation parameters; everything else frozen.
- "act": only the activation parameters; BatchNorm is frozen too (it stays in eval mode even
  while the model trains, so its running statistics do not move).
- "all": every parameter.

Groups: ConvReLU thresholds get their own L2 (the paper trains them with weight decay on theta
only), PReLU slopes get no weight decay (He et al.), BatchNorm gets none either.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .activations import ConvReLU2d, LearnableActivation, PReLU
from .vocabulary import TRAINABLE_MODES, check_choice

_FROZEN_BN_HOOK = "_reluswap_frozen_bn"


def _keep_eval(module: nn.Module, args) -> None:
    module.training = False  # runs before every forward, so model.train() cannot undo it


def _freeze_bn_statistics(model: nn.Module, freeze: bool) -> None:
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            handle = m.__dict__.pop(_FROZEN_BN_HOOK, None)
            if handle is not None:
                handle.remove()
            if freeze:
                m.__dict__[_FROZEN_BN_HOOK] = m.register_forward_pre_hook(_keep_eval)


def _classify(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Every parameter in exactly one class: prelu_slope, convrelu_theta, activation, bn, weights."""
    groups: dict[str, list[nn.Parameter]] = {k: [] for k in ("activation", "prelu_slope", "convrelu_theta", "bn", "weights")}
    seen: set[int] = set()

    def put(kind: str, p: nn.Parameter) -> None:
        if id(p) not in seen:
            seen.add(id(p))
            groups[kind].append(p)

    for m in model.modules():
        if isinstance(m, ConvReLU2d):
            put("convrelu_theta", m.theta)
        elif isinstance(m, PReLU):
            for p in m.parameters(recurse=False):
                put("prelu_slope", p)
        elif isinstance(m, LearnableActivation):
            for p in m.parameters(recurse=False):
                put("activation", p)
        elif isinstance(m, _BatchNorm):
            for p in m.parameters(recurse=False):
                put("bn", p)
    for p in model.parameters():
        put("weights", p)
    return groups


def trainable(
    model: nn.Module,
    mode: str = "bn+act",
    weight_decay: float = 0.0,
    threshold_l2: float = 1e-4,
) -> list[dict]:
    """Set requires_grad for `mode` and return optimizer parameter groups (each with a "name").

    Pass the result straight to an optimizer: torch.optim.Adam(trainable(model), lr=1e-3).
    """
    check_choice("trainable mode", mode, TRAINABLE_MODES)
    classes = _classify(model)
    train = {"activation", "prelu_slope", "convrelu_theta"}
    if mode in ("bn+act", "all"):
        train.add("bn")
    if mode == "all":
        train.add("weights")
    decay = {
        "activation": weight_decay,
        "prelu_slope": 0.0,
        "convrelu_theta": threshold_l2,
        "bn": 0.0,
        "weights": weight_decay,
    }
    groups = []
    for name, params in classes.items():
        for p in params:
            p.requires_grad_(name in train)
        if name in train and params:
            groups.append({"name": name, "params": params, "weight_decay": decay[name]})
    _freeze_bn_statistics(model, freeze=mode == "act")
    return groups
