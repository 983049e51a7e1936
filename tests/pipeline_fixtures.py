"""Fixtures of the pipeline tests: a resnet18 pretrained on digits by `reluswap pretrain`, once per
session (shared between pytest-xdist workers through a file lock), and job configs.

Import the fixtures into a test module with `from pipeline_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

DEVICE = os.environ.get("RELUSWAP_TEST_DEVICE", "cpu")
IMAGE_SIZE = 32
ARCH = "torchvision:resnet18"
PRETRAIN_EPOCHS = 2


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
                rc = main(["pretrain", "--model", ARCH, "--data", "builtin:digits", "--image-size", str(IMAGE_SIZE),
                           "--epochs", str(PRETRAIN_EPOCHS), "--seed", "0", "--device", DEVICE, "--quiet", "--json",
                           "--out", str(weights)])
                assert rc == 0 and weights.exists()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return weights


def job_config(activation: str = "pvlu", strategy: str = "all", **train) -> dict:
    """A digits job config for the pretrained fixture (weights handed over as files["weights"]),
    without the ONNX/pt2 exports (CI time)."""
    return {
        "model": {"arch": ARCH, "num_classes": 10, "weights": "upload"},
        "dataset": {"uri": "builtin:digits", "image_size": IMAGE_SIZE, "val_split": 0.2},
        "activation": activation,
        "strategy": strategy,
        "train": {"epochs": 1, "batch_size": 64, "seed": 0, "stats_batches": 4, **train},
        # The export artifacts have tests of their own; the CLI runs here still produce them.
        "export": {"onnx": False, "pt2": False},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path
