"""Fixtures of the library tests: real torchvision and timm models with random weights and filled
BatchNorm statistics, and a fixed example input."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from converters.models import build_model

# Inputs are small so the suite runs on 2 CPU cores; every model here accepts 64x64.
IMAGE_SIZE = 64
DEVICE = torch.device(os.environ.get("RELUSWAP_TEST_DEVICE", "cpu"))


@functools.cache
def _filled(ref: str) -> torch.nn.Module:
    """A model with BN statistics filled by a few train-mode passes (random-init BN is badly
    conditioned, so "the output changes" tests need real statistics)."""
    torch.manual_seed(0)
    model = build_model(ref, num_classes=10).to(DEVICE)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device=DEVICE))
    return model.eval()


@pytest.fixture
def filled_model():
    """filled_model(ref) -> an eval-mode model (cached per worker; tests must not modify it)."""
    return _filled


@pytest.fixture
def example_input():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(DEVICE)
