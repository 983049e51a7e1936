"""Shared fixtures: real torchvision and timm models with random weights and filled BN statistics."""

from __future__ import annotations

import functools
import os
import socket

import pytest
import torch

from converters.models import build_model

# Inputs are small so the suite runs on 2 CPU cores; every model here accepts 64x64.
IMAGE_SIZE = 64
DEVICE = torch.device(os.environ.get("RELUSWAP_TEST_DEVICE", "cpu"))

# Without a GPU the Triton ConvReLU kernels run under Triton's CPU interpreter (small shapes). Triton
# reads this when a kernel is defined, so it is set before anything imports converters.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one intra-op thread per xdist worker: no oversubscription on 2 cores


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


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every connect fails, and the download caches are empty folders."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("RELUSWAP_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def pytest_collection_modifyitems(config, items):
    if DEVICE.type == "cuda" and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (set RELUSWAP_TEST_DEVICE=cuda on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
