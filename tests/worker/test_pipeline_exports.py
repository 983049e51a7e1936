"""The job's inference artifacts: model.onnx and model.pt2, verified before a job succeeds;
`reluswap export` on a saved conversion."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from job_helpers import job_config

from converters.saved import load_conversion
from worker import exports
from worker.pipeline import run_job


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pretrained_digits):  # noqa: F811
    out = tmp_path_factory.mktemp("job")
    config = job_config("pvlu", "all", max_steps=3)
    config["export"] = {"onnx": True, "pt2": True}
    result = run_job(config, out, files={"weights": pretrained_digits})
    assert result.status == "succeeded", result.error
    return result


def test_artifacts_are_written_and_verified(finished):
    assert {"model.onnx", "model.pt2", "weights.safetensors", "conversion.json", "report.json"} <= set(finished.artifacts)
    onnx_report = finished.report["exports"]["onnx"]
    assert onnx_report["ok"] and onnx_report["custom_nodes"] == 17 and onnx_report["functions"] == ["PVLU"]
    assert onnx_report["max_rel_diff"] <= exports.ONNX_TOLERANCE
    assert finished.metrics["onnx_max_abs_diff"] == onnx_report["max_abs_diff"]
    assert finished.report["exports"]["pt2"]["ok"]


def test_onnx_artifact_predicts_what_the_converted_model_predicts(finished):
    model, record = load_conversion(finished.out_dir)
    x = torch.randn(5, *record["example_input_shape"][1:], generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(finished.out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def test_an_export_beyond_tolerance_fails_the_job(tmp_path, pretrained_digits, monkeypatch):  # noqa: F811
    monkeypatch.setattr(exports, "ONNX_TOLERANCE", -1.0)  # nothing can pass
    config = job_config("frelu", "last:2", max_steps=1)
    config["export"] = {"onnx": True, "pt2": False}
    result = run_job(config, tmp_path, files={"weights": pretrained_digits})
    assert result.status == "failed"
    assert result.error["code"] == "export_check_failed" and "model.onnx" in result.error["message"]
    assert not (tmp_path / "model.onnx").exists()


def test_export_command_on_a_saved_conversion(finished, tmp_path):
    for extra, custom in (([], "17 reluswap nodes"), (["--inline"], "0 reluswap nodes")):
        done = subprocess.run(
            [sys.executable, "-m", "reluswap", "export", "--conversion", str(finished.out_dir),
             "--out", str(tmp_path / "m.onnx"), *extra],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout and custom in done.stdout
    missing = subprocess.run([sys.executable, "-m", "reluswap", "export", "--conversion", str(tmp_path),
                              "--out", str(tmp_path / "x.onnx")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "conversion.json not found" in missing.stderr
