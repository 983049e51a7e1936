"""DP ReLU (two slopes) and Dual Line (two slopes plus a mean shift)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LearnableActivation
from .registry import register


@register
class DPReLU(LearnableActivation):
    name = "dprelu"

    def activation(self, x: Tensor) -> Tensor:
        a, c = self.param_view(self.a, x), self.param_view(self.c, x)
        return torch.where(x >= 0, a * x, c * x)


@register
class DualLine(LearnableActivation):
    name = "dualline"

    def activation(self, x: Tensor) -> Tensor:
        a, c, m = (self.param_view(p, x) for p in (self.a, self.c, self.m))
        return torch.where(x >= 0, a * x, c * x) + m
