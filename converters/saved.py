"""A saved conversion: conversion.json (what to rebuild) + weights.safetensors (the trained values).

    save_conversion(out_dir, conversion, arch="torchvision:resnet18", num_classes=10,
                    example_input_shape=[1, 3, 32, 32], extra={"input": {...}})
    model, record = load_conversion(out_dir)

The record names the architecture and the conversion's spec; loading builds the architecture with
random weights, replays the spec through convert_from_spec (same sites, same parameter names) and
loads the weights strictly, so a saved conversion reloads exactly or fails naming the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

CONVERSION_FILE = "conversion.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = 1


def save_state_dict(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save as .safetensors (contiguous clones: no shared storage) or, for .pt/.pth, torch.save."""
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix in (".pt", ".pth"):
        torch.save(state, tmp)
    else:
        from safetensors.torch import save_file

        save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def conversion_record(conversion, *, arch: str, num_classes: int, example_input_shape: list[int],
                      extra: dict | None = None) -> dict:
    """conversion.json: all it takes to rebuild the converted model from its architecture.
    `extra` adds the caller's context (the job's options, input normalisation, versions)."""
    return {
        "format": FORMAT,
        "arch": arch,
        "num_classes": num_classes,
        "activation": conversion.spec.activation,
        "spec": conversion.spec.to_dict(),
        "sites": [s.to_dict() for s in conversion.sites],
        "sites_total": len(conversion.sites),
        "sites_replaced": len(conversion.replaced),
        "added_parameters": conversion.added_parameters(),
        "example_input_shape": list(example_input_shape),
        **(extra or {}),
    }


def save_conversion(directory: str | os.PathLike, conversion, model: nn.Module | None = None, *, arch: str,
                    num_classes: int, example_input_shape: list[int], extra: dict | None = None) -> list[str]:
    """Write weights.safetensors (of `model`, default conversion.model) and conversion.json; their names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = conversion.model if model is None else model
    save_state_dict(model, directory / WEIGHTS_FILE, metadata={"format": "reluswap", "arch": arch})
    record = conversion_record(conversion, arch=arch, num_classes=num_classes,
                               example_input_shape=example_input_shape, extra=extra)
    tmp = directory / (CONVERSION_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, directory / CONVERSION_FILE)
    return [WEIGHTS_FILE, CONVERSION_FILE]


def load_conversion(directory: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a converted model from conversion.json + weights.safetensors (strict load).

    Returns (model, record): the fx GraphModule in eval mode and the parsed conversion.json.
    """
    from safetensors.torch import load_file

    from .conversion import convert_from_spec
    from .models import build_model
    from .spec import load_converted_state_dict

    directory = Path(directory)
    record_path, weights_path = directory / CONVERSION_FILE, directory / WEIGHTS_FILE
    for p in (record_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p.name} not found in {directory}: not a converted model directory")
    record = json.loads(record_path.read_text())
    model = build_model(record["arch"], num_classes=record["num_classes"], pretrained=False).eval()
    example = torch.zeros(record["example_input_shape"])
    conversion = convert_from_spec(model, record["spec"], example)
    converted = conversion.model
    load_converted_state_dict(converted, load_file(str(weights_path), device="cpu"), strict=True)
    return converted.to(device).eval(), record
