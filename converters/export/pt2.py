"""model.pt2: the converted network as a torch.export program, loadable with torch alone.

torch.export fixes BatchNorm to eval mode, which is right for an inference artifact (and why
fine-tuning uses fx instead). The program holds aten ops only, so loading it never imports
reluswap.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def at_least_two(example_inputs: tuple) -> tuple:
    """torch.export specialises a dimension of size 1 to a constant: trace a batch of two."""
    return tuple(x if x.shape[0] > 1 else torch.cat([x, x]) for x in example_inputs)


def export_inputs(example_inputs: tuple | torch.Tensor, dynamic_batch: bool) -> tuple[tuple, tuple | None]:
    """(inputs, dynamic_shapes) for torch.export: with dynamic_batch, dim 0 of every input is symbolic."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not dynamic_batch:
        return example_inputs, None
    batch = torch.export.Dim("batch", min=1)
    return at_least_two(example_inputs), tuple({0: batch} for _ in example_inputs)


def export_pt2(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    path: str | os.PathLike,
    dynamic_batch: bool = True,
) -> Path:
    example_inputs, dynamic_shapes = export_inputs(example_inputs, dynamic_batch)
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    finally:
        model.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path
