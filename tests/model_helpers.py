"""Helpers shared by the conversion, spec, ONNX and training tests."""

from __future__ import annotations

import torch
from torch import nn


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


def tiny_convnet(classes: int = 4) -> nn.Module:
    """Two conv-BN-ReLU stages and a linear head: seconds to train on 8x8 images."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )
