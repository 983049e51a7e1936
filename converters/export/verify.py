"""verify_onnx: is this ONNX file valid, and does it compute what the PyTorch model computes?

Checks, in order: it parses; onnx.checker with full_check; strict shape inference; onnxruntime on
the CPU provider (and CUDA when present) against PyTorch on the same inputs; onnx's
ReferenceEvaluator on small inputs. A corrupted or tampered file fails one of them and the
report says which, instead of being accepted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import torch
from torch import nn

DEFAULT_TOLERANCE = 1e-4  # max abs difference relative to the PyTorch output scale


@dataclass
class RuntimeCheck:
    runtime: str  # "onnxruntime:CPUExecutionProvider", "reference"
    max_abs_diff: float
    max_rel_diff: float  # max abs diff / max |PyTorch output|
    classes_agree: bool
    passed: bool


@dataclass
class VerifyReport:
    path: str
    tolerance: float
    ok: bool = False
    errors: list[str] = field(default_factory=list)
    checks: list[RuntimeCheck] = field(default_factory=list)
    custom_nodes: int = 0
    functions: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    @property
    def max_rel_diff(self) -> float:
        return max((c.max_rel_diff for c in self.checks), default=float("nan"))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["max_abs_diff"] = self.max_abs_diff
        out["max_rel_diff"] = self.max_rel_diff
        return out


def _compare(runtime: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> RuntimeCheck:
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if got64.shape != want64.shape:
        return RuntimeCheck(runtime, float("inf"), float("inf"), False, False)
    diff = np.abs(got64 - want64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = max(float(np.abs(want64).max()) if want64.size else 0.0, 1e-12)
    finite = bool(np.isfinite(got64).all())
    agree = bool((got64.argmax(-1) == want64.argmax(-1)).all()) if got64.ndim >= 2 else True
    rel = max_abs / scale if finite else float("inf")
    return RuntimeCheck(runtime, max_abs if finite else float("inf"), rel, agree, finite and rel <= tolerance)


def _providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CPUExecutionProvider", "CUDAExecutionProvider") if p in available]


def _run_onnxruntime(path: str, feed: dict[str, np.ndarray], provider: str) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=[provider])
    return session.run(None, feed)[0]


def verify_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: tuple | torch.Tensor,
    tolerance: float = DEFAULT_TOLERANCE,
    reference: bool | None = None,
) -> VerifyReport:
    """Verify the ONNX file at `path` against `model` on `inputs` (a batch, or a tuple of them).

    reference: run onnx's ReferenceEvaluator too (default: only for small models and inputs; it
    is pure numpy). Returns a VerifyReport; `ok` is True only when every check passed.
    """
    path = str(path)
    report = VerifyReport(path=path, tolerance=tolerance)
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    try:
        proto = onnx.load(path)
    except Exception as err:  # a truncated or corrupted file
        report.errors.append(f"cannot parse: {type(err).__name__}: {err}")
        return report
    report.custom_nodes = sum(1 for n in proto.graph.node if n.domain == "reluswap")
    report.functions = [f.name for f in proto.functions]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:
        report.errors.append(f"onnx.checker (full_check): {err}")
        return report
    try:
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as err:
        report.errors.append(f"strict shape inference: {err}")
        return report

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(*inputs)
    finally:
        model.train(was_training)
    want_np = want.detach().float().cpu().numpy()
    names = [i.name for i in proto.graph.input if i.name not in {init.name for init in proto.graph.initializer}]
    feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
    for provider in _providers():
        try:
            got = _run_onnxruntime(path, feed, provider)
        except Exception as err:
            report.errors.append(f"onnxruntime {provider}: {type(err).__name__}: {err}")
            continue
        report.checks.append(_compare(f"onnxruntime:{provider}", got, want_np, tolerance))

    if reference is None:
        reference = len(proto.graph.node) < 400 and sum(t.numel() for t in inputs) <= 3 * 64 * 64 * 2
    if reference:
        from onnx.reference import ReferenceEvaluator

        try:
            got = ReferenceEvaluator(proto).run(None, feed)[0]
            report.checks.append(_compare("onnx.reference", got, want_np, tolerance))
        except Exception as err:
            report.errors.append(f"ReferenceEvaluator: {type(err).__name__}: {err}")

    failed = [c.runtime for c in report.checks if not c.passed]
    if failed:
        report.errors.append(
            f"outputs differ from PyTorch beyond {tolerance:g} of the output scale in: {', '.join(failed)} "
            f"(max relative difference {report.max_rel_diff:.3g})"
        )
    report.ok = not report.errors and bool(report.checks)
    return report
