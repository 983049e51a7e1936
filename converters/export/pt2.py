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


def export_pt2(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    path: str | os.PathLike,
    dynamic_batch: bool = True,
) -> Path:
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
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
