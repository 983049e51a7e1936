"""Helpers of the pipeline tests: job configs for the `pretrained_digits` fixture (tests/conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEVICE = os.environ.get("RELUSWAP_TEST_DEVICE", "cpu")
IMAGE_SIZE = 32
ARCH = "torchvision:resnet18"
PRETRAIN_EPOCHS = 2


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
