"""The loader policy: deterministic shuffling, workers only for file-backed data on CUDA."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset


def loader(dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool = False,
           seed: int = 0, epoch: int = 0) -> DataLoader:
    """Shuffled loaders draw their order from a generator seeded with (seed, epoch)."""
    file_backed = not hasattr(dataset, "images")  # in-memory TensorImages need no workers
    workers = min(8, os.cpu_count() or 1) if device.type == "cuda" and file_backed else 0
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
        drop_last=shuffle and len(dataset) > batch_size,  # no size-1 batch for BatchNorm
        pin_memory=device.type == "cuda",
    )
