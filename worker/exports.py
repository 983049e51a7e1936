"""The inference artifacts of a job: model.onnx (custom ops + functions) and model.pt2.

Both are verified against the PyTorch model on a validation batch before the job may succeed;
the differences go into report.json, and a file beyond tolerance fails the job.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .errors import ExportCheckError

ONNX_FILE = "model.onnx"
PT2_FILE = "model.pt2"
ONNX_TOLERANCE = 1e-4  # max abs difference relative to the output scale
PT2_TOLERANCE = 1e-5
VERIFY_BATCH = 8


def _export_copy(model: torch.nn.Module) -> torch.nn.Module:
    """fp32, contiguous, on the CPU: what the artifacts hold, whatever trained on the GPU."""
    clone = copy.deepcopy(model).float().cpu().eval()
    return clone.to(memory_format=torch.contiguous_format)


def write_onnx(model: torch.nn.Module, batch: torch.Tensor, out_dir: Path, opset: int, inline: bool = False) -> dict:
    from converters.export import export_onnx, verify_onnx

    path = export_onnx(model, batch[:1], out_dir / ONNX_FILE, opset=opset, inline=inline)
    report = verify_onnx(path, model, batch, tolerance=ONNX_TOLERANCE)
    summary = {
        "file": ONNX_FILE,
        "opset": opset,
        "inlined": inline,
        "ok": report.ok,
        "custom_nodes": report.custom_nodes,
        "functions": report.functions,
        "max_abs_diff": report.max_abs_diff,
        "max_rel_diff": report.max_rel_diff,
        "checks": [vars(c) for c in report.checks],
        "errors": report.errors,
        "bytes": path.stat().st_size,
    }
    if not report.ok:
        raise ExportCheckError(f"{ONNX_FILE} failed verification against PyTorch: {'; '.join(report.errors)}")
    return summary


def write_pt2(model: torch.nn.Module, batch: torch.Tensor, out_dir: Path) -> dict:
    from converters.export import export_pt2

    path = export_pt2(model, batch[:1], out_dir / PT2_FILE)
    program = torch.export.load(path)
    with torch.no_grad():
        diff = float((program.module()(batch) - model(batch)).abs().max())
    summary = {"file": PT2_FILE, "max_abs_diff": diff, "bytes": path.stat().st_size, "ok": diff <= PT2_TOLERANCE}
    if not summary["ok"]:
        raise ExportCheckError(f"{PT2_FILE} differs from the PyTorch model by {diff:.3g} (> {PT2_TOLERANCE})")
    return summary


def write_exports(model: torch.nn.Module, batch: torch.Tensor, out_dir: Path, export_cfg) -> tuple[list[str], dict]:
    """Write and verify the artifacts export_cfg asks for; returns (artifact names, report section)."""
    clone = _export_copy(model)
    batch = batch[:VERIFY_BATCH].detach().float().cpu().contiguous()
    artifacts, report = [], {}
    if export_cfg.onnx:
        report["onnx"] = _guarded(ONNX_FILE, write_onnx, clone, batch, out_dir, export_cfg.opset, export_cfg.inline)
        artifacts.append(ONNX_FILE)
    if export_cfg.pt2:
        report["pt2"] = _guarded(PT2_FILE, write_pt2, clone, batch, out_dir)
        artifacts.append(PT2_FILE)
    return artifacts, report


def _guarded(name: str, write, *args) -> dict:
    """An exporter failure fails the job with a clear error (never a half-written artifact)."""
    try:
        return write(*args)
    except Exception as err:
        (args[2] / name).unlink(missing_ok=True)  # a file that failed verification is no artifact
        if isinstance(err, ExportCheckError):
            raise
        raise ExportCheckError(f"writing {name} failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err
