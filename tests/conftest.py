"""What every test folder shares: the device, Triton's interpreter without a GPU, one thread per
xdist worker, the `gpu` marker, and a model pretrained on digits (once per session).

Each folder's own fixtures are in its conftest.py: converters/ (models with filled BatchNorm
statistics), worker/ (no network), service/ (PostgreSQL, redis-server, the API; torch-free)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import torch
from job_helpers import ARCH, PRETRAIN_EPOCHS
from job_helpers import DEVICE as JOB_DEVICE
from job_helpers import IMAGE_SIZE as JOB_IMAGE_SIZE

DEVICE = torch.device(os.environ.get("RELUSWAP_TEST_DEVICE", "cpu"))

# Without a GPU the Triton ConvReLU kernels run under Triton's CPU interpreter (small shapes). Triton
# reads this when a kernel is defined, so it is set before anything imports converters.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one intra-op thread per xdist worker: no oversubscription on 2 cores


def pytest_collection_modifyitems(config, items):
    if DEVICE.type == "cuda" and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (set RELUSWAP_TEST_DEVICE=cuda on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


# ---- a model pretrained on digits, once per session (worker and service tests share it)


def _shared_dir(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session sees (the parent of the per-worker base temp)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared = root / "reluswap-shared"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def pretrained_digits(tmp_path_factory) -> Path:
    """Weights of torchvision:resnet18 trained on builtin:digits at 32 px (the CLI, in-process)."""
    from reluswap.cli import main

    shared = _shared_dir(tmp_path_factory)
    weights = shared / "resnet18-digits.safetensors"
    with open(shared / "pretrain.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not weights.exists():
                rc = main(["pretrain", "--model", ARCH, "--data", "builtin:digits", "--image-size", str(JOB_IMAGE_SIZE),
                           "--epochs", str(PRETRAIN_EPOCHS), "--seed", "0", "--device", JOB_DEVICE, "--quiet", "--json",
                           "--out", str(weights)])
                assert rc == 0 and weights.exists()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return weights
