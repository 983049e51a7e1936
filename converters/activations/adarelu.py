"""AdaReLU: y = max(x, theta), a learnable rectification threshold."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LearnableActivation
from .registry import register


@register
class AdaReLU(LearnableActivation):
    name = "adarelu"

    def activation(self, x: Tensor) -> Tensor:
        return torch.maximum(x, self.param_view(self.theta, x))

    def rectification_point(self) -> Tensor:
        # Active means x > theta here (detached: it is read for metrics, not trained through).
        return self.theta.detach()
