"""The contents of report.json and conversion.json, and small measurements that feed them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
from torch import nn

FORMAT = 1


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("reluswap", "torch", "torchvision", "timm", "safetensors", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def parameter_stats(model: nn.Module, sites) -> dict[str, dict[str, dict]]:
    """{site name: {parameter key: {shape, numel, mean, std, min, max}}} for every replaced site."""
    params = dict(model.named_parameters())
    out: dict[str, dict[str, dict]] = {}
    for site in sites:
        if not site.replaced:
            continue
        per_site = {}
        for key in site.parameters:
            p = params[key].detach().double().cpu()
            per_site[key] = {
                "shape": list(p.shape),
                "numel": p.numel(),
                "mean": float(p.mean()),
                "std": float(p.std(unbiased=False)) if p.numel() > 1 else 0.0,
                "min": float(p.min()),
                "max": float(p.max()),
            }
        out[site.name] = per_site
    return out


def relative_error_decrease(acc_before: float | None, acc_after: float | None) -> float | None:
    """(e_before - e_after) / e_before with e = 1 - accuracy; None when e_before is 0."""
    if acc_before is None or acc_after is None:
        return None
    e_before, e_after = 1.0 - acc_before, 1.0 - acc_after
    return None if e_before <= 0 else (e_before - e_after) / e_before


def conversion_context(cfg, classes: list[str], image_size: int, mean: list[float], std: list[float]) -> dict:
    """What a job adds to the library's conversion.json: its options, the input it was trained on."""
    return {
        "activation_options": cfg.activation_options.model_dump(mode="json"),
        "strategy": cfg.strategy,
        "image_size": image_size,
        "input": {"channels": 3, "mean": mean, "std": std, "classes": classes},
        "versions": versions(),
    }


def write_json(path: str | os.PathLike, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_default) + "\n")
    os.replace(tmp, path)


def _default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
