"""The speed benchmarks (bench/) run in --quick mode and write the JSON they promise.

Only the shape of the output is checked: keys present, ratios positive numbers. No speed target:
the numbers depend on the machine and on what else runs on it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_quick(script: str, tmp_path: Path, *extra: str, timeout: float = 120) -> dict:
    env = {**os.environ, "RELUSWAP_BENCH_RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob(f"{Path(script).stem}-*.json"))
    assert len(files) == 1, files
    result = json.loads(files[0].read_text())
    assert json.loads(proc.stdout) == result
    assert {"benchmark", "started_at", "environment", "timing", "quick"} <= result.keys()
    assert result["quick"] is True
    assert {"torch", "device", "cpu_count", "torch_threads"} <= result["environment"].keys()
    return result


def positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_activation_throughput(tmp_path):
    result = run_quick("activation_throughput.py", tmp_path)
    assert result["modes"] == ["eager"]
    assert len(result["results"]) == 2
    for entry in result["results"]:
        assert {"shape", "bytes", "modes"} <= entry.keys()
        rows = entry["modes"]["eager"]
        assert set(rows) == {"torch.relu", *result["activations"]}
        assert "pvlu" in rows and "adarelu" in rows
        for row in rows.values():
            for key in ("fwd_ms", "fwd_bwd_ms", "fwd_gbps", "fwd_bwd_gbps", "fwd_ratio_to_relu",
                        "fwd_bwd_ratio_to_relu"):
                assert positive(row[key]), (key, row)
        assert rows["torch.relu"]["fwd_bwd_ratio_to_relu"] == 1.0
        assert positive(entry["copy_gbps"])
        assert all(positive(r["fwd_bwd_bandwidth_fraction"]) for r in rows.values())
    assert result["targets"][0]["applies"] is False  # only on CUDA, compiled, at 1 GB


def test_convrelu_conv(tmp_path):
    result = run_quick("convrelu_conv.py", tmp_path)
    assert [s["stage"].split("@")[0] for s in result["stages"]] == ["64", "128", "256", "512"]
    for stage in result["stages"]:
        assert positive(stage["conv_relu"]["fwd_bwd_ms"]) and positive(stage["conv_relu"]["saved_bytes"])
        for impl in ("unfold", "shifted", "patches"):
            row = stage[impl]
            assert row["available"] is True
            for key in ("fwd_bwd_ms", "time_ratio_to_conv_relu", "saved_bytes", "saved_ratio_to_conv_relu"):
                assert positive(row[key]), (impl, key, row)
        if not torch.cuda.is_available():  # no GPU: the Triton kernels are not timed, and it says why
            reason = stage["fused"]["reason"]
            assert stage["fused"]["available"] is False and ("CUDA" in reason or "TRITON_INTERPRET" in reason)
    cpu_target = next(t for t in result["targets"] if t["impl"] == "patches")
    assert cpu_target["time_ratio_max"] == 3.0 and positive(cpu_target["worst_time_ratio"])


def test_onnx_latency(tmp_path):
    result = run_quick("onnx_latency.py", tmp_path, "--threads", "1")
    assert {"onnxruntime", "onnx"} <= result["environment"].keys()
    (entry,) = result["results"]
    assert entry["model"] == "resnet18"
    assert entry["files"]["pvlu"]["custom_ops"] == ["PVLU"]
    assert entry["files"]["convrelu"]["custom_ops"] == ["ConvReLU"]
    assert entry["files"]["original"]["custom_ops"] == []
    for batch in ("1", "2"):
        assert all(positive(v) for v in entry["latency_ms"][batch].values())
        ratios = entry["ratio_to_original"][batch]
        assert set(ratios) == {"pvlu", "convrelu"}
        assert all(positive(v) for v in ratios.values()), ratios


def test_finetune_throughput(tmp_path):
    result = run_quick("finetune_throughput.py", tmp_path, "--threads", "1")
    assert result["model"] == "torchvision:resnet50" and result["trainable"] == "bn+act"
    assert result["compile"] == {"setting": "auto", "enabled": False}  # auto: eager on CPU
    rows = result["results"]
    assert list(rows) == ["original", "relu", "pvlu", "convrelu"]
    for name, row in rows.items():
        assert positive(row["images_per_s"]) and positive(row["step_ms_median"]), (name, row)
        assert row["compile"]["used"] is False
        assert "bn" in row["trainable_parameters"]
        if name != "original":
            assert positive(row["throughput_ratio"]) and row["conversion"]["sites_replaced"] > 0
    assert rows["pvlu"]["conversion"]["sites_replaced"] == rows["pvlu"]["conversion"]["sites_total"] == 49
    assert "activation" in rows["pvlu"]["trainable_parameters"]
    assert "convrelu_theta" in rows["convrelu"]["trainable_parameters"]
    assert set(result["targets"]) == {"pvlu", "convrelu"} and result["targets_apply"] is False
    for target in result["targets"].values():
        assert target["applies"] is False and isinstance(target["pass"], bool)


@pytest.mark.slow  # two embedded deployments, each running a 3-child compare job: about a minute on 2 cores
def test_compare_scaling(tmp_path):
    result = run_quick("compare_scaling.py", tmp_path, timeout=600)
    assert result["children"] == 3  # the original, then the relu control and pvlu, one seed each
    assert [r["workers"] for r in result["runs"]] == [1, 2]
    for run in result["runs"]:
        assert run["status"] == "succeeded" and run["children"] == 3
        assert run["children_status"] == {"succeeded": 3}
        assert positive(run["wall_s"]) and positive(run["child_seconds_sum"]) and positive(run["original_s"])
        assert 1 <= run["workers_seen"] <= run["workers"]
    assert result["runs"][0]["workers_seen"] == 1
    assert positive(result["ratio_2_to_1"]) and result["wall_ratio_to_first"]["1"] == 1.0
    assert result["ratio_2_to_1"] == result["wall_ratio_to_first"]["2"]
