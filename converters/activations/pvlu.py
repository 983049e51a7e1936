"""PVLU: y = base(x) + alpha * sin(beta * x)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LearnableActivation
from .registry import register


@register
class PVLU(LearnableActivation):
    name = "pvlu"

    def activation(self, x: Tensor) -> Tensor:
        # alpha = 0 adds an exact (signed) zero, so identity init is bitwise ReLU.
        alpha, beta = self.param_view(self.alpha, x), self.param_view(self.beta, x)
        return self.base(x) + alpha * torch.sin(beta * x)
