"""Base class of the elementwise learnable activations.

Parameter names, initial values, accepted granularities and options come from the catalogue
(`converters.catalog`), so the numbers live in one place.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from converters.catalog import CATALOG, ActivationInfo, get_info
from converters.vocabulary import INITS, check_options


class LearnableActivation(nn.Module):
    """An activation that replaces one ReLU call site; subclasses set `name` and `activation`."""

    name: ClassVar[str]

    def __init__(
        self,
        channels: int,
        init: str = "identity",
        granularity: str | None = None,
        cap: float | None = None,
        **options,
    ):
        super().__init__()
        info = self.info
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r} (for {self.name})")
        granularity = info.check_granularity(granularity)
        if cap is not None:
            if not info.supports_cap:
                capped = ", ".join(n for n, i in CATALOG.items() if i.supports_cap)
                raise ValueError(f"cap is not supported by {self.name}; accepted for: {capped} (or cap=None)")
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0:
                raise ValueError(f"cap must be a positive number (e.g. 6.0 for ReLU6 sites), got {cap!r}")
            cap = float(cap)
        check_options(self.name, options, info.options)
        if granularity == "channel" and (
            isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
        ):
            raise ValueError(f"channels must be a positive int for channel granularity, got {channels!r}")

        self.channels = channels
        self.granularity = granularity
        self.init = init
        self.cap = cap
        self.options = {**info.options, **options}
        size = channels if granularity == "channel" else 1
        for pname, value in info.init_values(init).items():
            self.register_parameter(pname, nn.Parameter(torch.full((size,), float(value))))

    def forward(self, x: Tensor) -> Tensor:
        if self.info.onnx_op is not None and torch.onnx.is_in_onnx_export():
            # One node in the custom domain per site (see converters/export); never in training.
            from converters.export.symbolic import activation_node

            return activation_node(self, x)
        return self.activation(x)

    def activation(self, x: Tensor) -> Tensor:
        """The activation's math; subclasses implement it."""
        raise NotImplementedError

    @property
    def info(self) -> ActivationInfo:
        return get_info(self.name)

    def param_view(self, p: Tensor, x: Tensor) -> Tensor:
        """(C,) -> (1, C, 1, ...) so it broadcasts over dim 1 of x; (1,) -> (1, 1, ...)."""
        shape = [1] * x.ndim
        shape[1] = p.shape[0]
        return p.reshape(shape)

    def base(self, x: Tensor) -> Tensor:
        # The capped form is the ReLU6 of a ReLU6 call site, never a plain ReLU.
        return torch.relu(x) if self.cap is None else x.clamp(0.0, self.cap)

    def rectification_point(self) -> Tensor | float:
        """The unit counts as active where x > this."""
        return 0.0

    def extra_repr(self) -> str:
        parts = [f"channels={self.channels}", f"granularity={self.granularity}"]
        if self.cap is not None:
            parts.append(f"cap={self.cap:g}")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return ", ".join(parts)
