"""Models and weights: build an architecture and load a state_dict file into it, safely.

Uploads are never unpickled: .safetensors through safetensors, .pt/.pth through
torch.load(weights_only=True). A state_dict that does not fit names the keys and shapes that differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import InputError, NetworkUnavailableError, WeightsMismatchError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOWN = 10


def build(arch: str, num_classes: int | None, weights: str = "none", weights_file=None) -> nn.Module:
    """The architecture with random, library-default or file weights (see ModelConfig.weights)."""
    from converters.models import ModelReferenceError, build_model

    try:
        if weights == "default":
            try:
                model = build_model(arch, num_classes=num_classes, pretrained=True)
            except ModelReferenceError:
                raise
            except Exception as err:  # URLError, HTTPError, socket errors, hub errors
                raise NetworkUnavailableError(
                    f"could not fetch the default pretrained weights of {arch}: {type(err).__name__}: {err}. "
                    "They need the network (or the library's weight cache); pass a weights file instead.",
                    "model.weights") from None
        else:
            model = build_model(arch, num_classes=num_classes, pretrained=False)
    except ModelReferenceError as err:
        raise InputError(f"model.arch: {err}", "model.arch") from None
    if weights == "upload":
        if weights_file is None:
            raise InputError("model.weights is 'upload' but no weights file was handed to the job", "model.weights")
        load_weights_into(model, read_state_dict(weights_file))
    return model


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors, or .pt/.pth/.bin read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors" or _looks_like_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"cannot read weights from {path.name}: {type(err).__name__}: {err}. Accepted: a state_dict saved "
            "as .safetensors, or with torch.save (read with weights_only=True: tensors only, no pickled "
            "objects)", "model.weights") from None
    return _unwrap(data, path.name)


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length then '{'; torch.save files are zips."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _unwrap(data, name: str) -> dict[str, torch.Tensor]:
    if isinstance(data, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"{name} does not hold a state_dict (a mapping of names to tensors)", "model.weights")
    keys = list(data)
    if all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


def describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape differences, each with shapes; empty when it fits."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state_dict]
    unexpected = [k for k in state_dict if k not in ours]
    shapes = [k for k in ours if k in state_dict and tuple(ours[k].shape) != tuple(state_dict[k].shape)]
    problems = []

    def listing(keys, fmt):
        shown = ", ".join(fmt(k) for k in keys[:_SHOWN])
        return shown + (f" ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")

    if shapes:
        problems.append("shape mismatch: " + listing(
            shapes, lambda k: f"{k} (weights {list(state_dict[k].shape)}, model {list(ours[k].shape)})"))
    if missing:
        problems.append(f"missing from the weights ({len(missing)}): " + listing(
            missing, lambda k: f"{k} {list(ours[k].shape)}"))
    if unexpected:
        problems.append(f"not in the model ({len(unexpected)}): " + listing(
            unexpected, lambda k: f"{k} {list(state_dict[k].shape)}"))
    return problems


def load_weights_into(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    problems = describe_mismatch(model, state_dict)
    if problems:
        raise WeightsMismatchError(
            f"the weights do not fit {type(model).__name__}: " + "; ".join(problems), "model.weights")
    model.load_state_dict(state_dict, strict=True)
