"""FReLU: y = base(x) + b."""

from __future__ import annotations

from torch import Tensor

from .base import LearnableActivation
from .registry import register


@register
class FReLU(LearnableActivation):
    name = "frelu"

    def activation(self, x: Tensor) -> Tensor:
        return self.base(x) + self.param_view(self.b, x)
