"""ReLU (per-site module, optionally capped), LeakyReLU (fixed slope) and PReLU."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import LearnableActivation
from .registry import register


@register
class ReLU(LearnableActivation):
    name = "relu"

    def activation(self, x: Tensor) -> Tensor:
        return self.base(x)


@register
class LeakyReLU(LearnableActivation):
    name = "leaky_relu"

    @property
    def negative_slope(self) -> float:
        return float(self.options["negative_slope"])

    def activation(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


@register
class PReLU(LearnableActivation):
    name = "prelu"

    def activation(self, x: Tensor) -> Tensor:
        # F.prelu broadcasts a (C,) weight over dim 1 and a (1,) weight over everything.
        return F.prelu(x, self.a)
