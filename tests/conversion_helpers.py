"""Helpers shared by the conversion, spec and ONNX tests."""

from __future__ import annotations

import torch


def randomize(conversion, low: float = 0.2, high: float = 0.6, seed: int = 0):
    """Set every new parameter of a conversion to uniform values in [low, high); returns it."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(conversion.model.named_parameters())
    with torch.no_grad():
        for site in conversion.replaced:
            for key in site.parameters:
                p = params[key]
                p.copy_(torch.rand(p.shape, generator=gen) * (high - low) + low)
    return conversion
