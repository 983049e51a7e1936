"""export_onnx: a converted model as ONNX with one custom node per site plus defining functions."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from .functions import DOMAIN, VERSION, function_proto
from .pt2 import export_inputs

TWO_GB = 2 * 1024**3


def _custom_op_types(model: onnx.ModelProto) -> list[str]:
    seen: list[str] = []
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type not in seen:
            seen.append(node.op_type)
    return seen


def _default_opset(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add one FunctionProto per custom op type used, importing the model's own default opset
    (otherwise the full checker fails on mismatched opset versions)."""
    opset = _default_opset(model)
    present = {(f.domain, f.name) for f in model.functions}
    for op_type in _custom_op_types(model):
        if (DOMAIN, op_type) not in present:
            model.functions.append(function_proto(op_type, opset))
    if not any(op.domain == DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, VERSION))
    return model


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """A plain standard-op model (for runtimes that do not take functions)."""
    from onnx.inliner import inline_local_functions

    flat = inline_local_functions(model)
    del flat.functions[:]
    kept = [op for op in flat.opset_import if op.domain != DOMAIN]
    del flat.opset_import[:]
    flat.opset_import.extend(kept)
    return flat


def to_onnx(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    opset: int = 18,
    dynamic_batch: bool = True,
    inline_functions: bool = False,
) -> onnx.ModelProto:
    """Export in eval mode with torch.onnx.export(dynamo=True); returns the ModelProto."""
    example_inputs, dynamic_shapes = export_inputs(example_inputs, dynamic_batch)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, example_inputs, dynamo=True, opset_version=opset, dynamic_shapes=dynamic_shapes,
                external_data=False, verbose=False,
            )
    finally:
        model.train(was_training)
    proto = attach_functions(program.model_proto)
    return inline(proto) if inline_functions else proto


def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """One self-contained file unless the model is over 2 GB (then a `.data` sidecar)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = proto.ByteSize() > TWO_GB if proto.ByteSize() >= 0 else True
    if large:
        onnx.save_model(proto, path, save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(proto, path)
    return path


def export_onnx(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    path: str | os.PathLike,
    opset: int = 18,
    dynamic_batch: bool = True,
    inline: bool = False,
) -> Path:
    """Write `model` to `path` as ONNX: one `reluswap` node per converted site and a model-local
    function per op type (or, with inline=True, standard ops only)."""
    return save_onnx(to_onnx(model, example_inputs, opset, dynamic_batch, inline), path)
