"""The fine-tuning job end to end on real data (scikit-learn's digits) with a resnet18 pretrained by
`reluswap pretrain`: the CLI, the artifacts, the at-init check, cancellation and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from job_helpers import DEVICE, IMAGE_SIZE, job_config, write_config

import worker.pipeline as pipeline
from converters.saved import load_conversion
from reluswap.cli import main
from worker.pipeline import run_job

API_METRICS = ("baseline_accuracy", "converted_accuracy_at_init", "final_accuracy", "relative_error_decrease",
               "sites_total", "sites_replaced")
SITE_STATS = ("index", "name", "units", "samples_per_unit", "activation_probability", "lifetime_sparsity",
              "dispersion", "dead_fraction")
PARAM_STATS = ("shape", "numel", "mean", "std", "min", "max")
STAGES = ["loading", "baseline", "converting", "training", "verifying", "exporting"]


@pytest.fixture
def spy(monkeypatch):
    """Captures run_job's result and progress events when the CLI calls it."""
    seen: dict = {"events": []}
    real = pipeline.run_job

    def wrapper(config, out_dir, **kw):
        progress = kw.get("progress")

        def record(event):
            seen["events"].append(event)
            if progress is not None:
                progress(event)

        kw["progress"] = record
        kw["progress_interval"] = 0.0
        seen["result"] = real(config, out_dir, **kw)
        return seen["result"]

    monkeypatch.setattr(pipeline, "run_job", wrapper)
    return seen


CASES = [("pvlu", "all"), ("frelu", "all"), ("dualline", "all"), ("convrelu", "block:first")]


@pytest.mark.parametrize("activation, strategy", CASES, ids=[c[0] for c in CASES])
def test_finetune_cli_on_digits(tmp_path, pretrained_digits, spy, capsys, activation, strategy):  # noqa: F811
    out = tmp_path / "out"
    rc = main(["finetune", "--model", "torchvision:resnet18", "--weights", str(pretrained_digits),
               "--data", "builtin:digits", "--image-size", str(IMAGE_SIZE), "--activation", activation,
               "--strategy", strategy, "--trainable", "bn+act", "--epochs", "1", "--max-steps", "8",
               "--device", DEVICE, "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    for row in ("baseline accuracy", "converted, at init", "final accuracy", "relative error decrease",
                "sites replaced"):
        assert row in printed
    result = spy["result"]
    assert result.status == "succeeded", result.error
    names = {p.name for p in out.iterdir()}
    assert {"conversion.json", "report.json", "weights.safetensors"} <= names  # (+ the export artifacts)
    assert not {"checkpoints", "work"} & names  # removed after success

    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    assert set(API_METRICS) <= set(metrics) and all(metrics[k] is not None for k in API_METRICS)
    # At identity init the converted model predicts exactly what the original did.
    assert metrics["converted_accuracy_at_init"] == metrics["baseline_accuracy"]
    assert report["at_init"]["checked"] and report["at_init"]["prediction_mismatches"] == 0
    assert metrics["baseline_accuracy"] > 0.9  # the pretrained fixture is a real model
    e_before, e_after = 1 - metrics["baseline_accuracy"], 1 - metrics["final_accuracy"]
    assert metrics["relative_error_decrease"] == pytest.approx((e_before - e_after) / e_before)
    assert metrics["sites_total"] == 17
    assert metrics["sites_replaced"] == (4 if activation == "convrelu" else 17)
    if activation == "convrelu":  # the default, resolved for a CPU worker
        assert report["convrelu_impl"] == {"setting": "auto", "used": "patches"}

    # Activation statistics of the original's ReLU sites before, of the converted sites after.
    before, after = report["activation_stats"]["before"], report["activation_stats"]["after"]
    assert len(before) == len(after) == 17
    for row in before + after:
        assert set(SITE_STATS) <= set(row)
        assert 0 <= row["lifetime_sparsity"] <= 1 and 0 <= row["dead_fraction"] <= 1 and row["dispersion"] >= 0
    # Learned parameter statistics for every replaced site, at init and after.
    final = report["parameter_stats"]["final"]
    replaced = [s for s in report["sites"] if s["replaced"]]
    assert set(final) == {s["name"] for s in replaced}
    for site in replaced:
        assert set(final[site["name"]]) == set(site["parameters"]) and site["parameters"]
        for stats in final[site["name"]].values():
            assert set(PARAM_STATS) <= set(stats) and stats["min"] <= stats["mean"] <= stats["max"]
    # The training curve, timings, config.
    curve = report["training"]
    assert len(curve["epochs"]) == 1 and len(curve["steps"]) == 8
    assert set(curve["epochs"][0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
    assert curve["epochs"][0]["val_accuracy"] == metrics["final_accuracy"]
    assert set(report["timings"]) == set(STAGES)
    assert report["config"]["activation"] == activation and report["config"]["strategy"] == strategy
    assert report["data"]["num_classes"] == 10 and report["data"]["image_size"] == IMAGE_SIZE

    record = json.loads((out / "conversion.json").read_text())
    assert {"arch", "num_classes", "activation", "activation_options", "strategy", "spec", "sites",
            "example_input_shape", "versions"} <= set(record)
    assert set(record["versions"]) >= {"torch", "torchvision", "timm", "reluswap"}
    assert len(record["sites"]) == 17 and record["example_input_shape"] == [1, 3, IMAGE_SIZE, IMAGE_SIZE]

    # Rebuilt from conversion.json + weights.safetensors: the in-memory model's outputs (1e-6).
    rebuilt, _ = load_conversion(out, device=DEVICE)
    model = result.model.eval()
    x = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        assert float((rebuilt(x) - model(x)).abs().max()) <= 1e-6
    assert report["reload_max_abs_diff"] <= 1e-6

    # Progress: every stage in order, training progress with the documented fields.
    events = spy["events"]
    assert [e["stage"] for e in events if e["type"] == "stage"] == [*STAGES, "done"]
    steps = [e for e in events if e["type"] == "progress" and "loss" in e]
    assert steps and {"epoch", "epochs", "step", "steps", "loss", "accuracy", "images_per_s", "fraction"} <= set(steps[-1])
    assert steps[-1]["step"] == steps[-1]["steps"] == 8


def _comparable(report: dict) -> dict:
    """What must be identical between an uninterrupted and a resumed run (not timings)."""
    training = report["training"]
    return {
        "metrics": report["metrics"],
        "epochs": [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in training["epochs"]],
        "steps": training["steps"],
        "final": report["final"],
        "parameter_stats": report["parameter_stats"]["final"],
        "after": report["activation_stats"]["after"],
    }


def _same_threads() -> dict:
    """CPU results depend on the intra-op thread count: give the child this process's count."""
    threads = str(torch.get_num_threads())
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def test_killed_run_resumes_from_epoch_1_and_matches(tmp_path, pretrained_digits):  # noqa: F811
    config = job_config("pvlu", epochs=2)
    config["dataset"]["val_split"] = 0.5
    cfg_file = write_config(tmp_path / "job.json", config)
    files = {"weights": str(pretrained_digits)}
    reference = run_job(config, tmp_path / "reference", files=files, device=DEVICE)
    assert reference.status == "succeeded"

    out = tmp_path / "killed"
    checkpoint = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reluswap", "finetune", "--config", str(cfg_file), "--weights", str(pretrained_digits),
         "--device", DEVICE, "--quiet", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_same_threads())
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists():  # epoch 1 done: the checkpoint is renamed into place
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no epoch-1 checkpoint in time"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside epoch 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "weights.safetensors").exists()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1

    events: list[dict] = []
    resumed = run_job(config, out, files=files, device=DEVICE, progress=events.append)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.report["training"]["resumed_from_epoch"] == [1]
    messages = [e["message"] for e in events if e["type"] == "log"]
    assert any("resumed from the checkpoint of epoch 1" in m for m in messages)
    assert not any("CPU threads" in m for m in messages)
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [2]  # epoch 1 was not redone
    assert _comparable(resumed.report) == _comparable(reference.report)
    from safetensors.torch import load_file

    ours, theirs = load_file(out / "weights.safetensors"), load_file(tmp_path / "reference" / "weights.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not checkpoint.exists()  # removed after success


def test_cancel_leaves_a_cancelled_result(tmp_path, pretrained_digits):  # noqa: F811
    calls = {"steps": 0}

    def should_cancel():
        return calls["steps"] >= 2

    def progress(event):
        if event["type"] == "progress" and "loss" in event:
            calls["steps"] = event["step"]

    result = run_job(job_config("pvlu"), tmp_path, files={"weights": str(pretrained_digits)}, device=DEVICE,
                     progress=progress, should_cancel=should_cancel, progress_interval=0.0)
    assert result.status == "cancelled" and result.error is None
    assert calls["steps"] == 2  # checked before every step: stopped before the third
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "cancelled"
    assert report["metrics"]["baseline_accuracy"] > 0.9 and report["metrics"]["final_accuracy"] is None
    assert report["activation_stats"]["before"] and len(report["training"]["steps"]) == 2
    assert not (tmp_path / "weights.safetensors").exists()


def test_a_changed_function_at_identity_init_fails_the_job(tmp_path, pretrained_digits, monkeypatch):  # noqa: F811
    """Plant the bug: pvlu's 'identity' alpha becomes 0.5, so converting changes the function."""
    from converters.catalog import CATALOG

    info = CATALOG["pvlu"]
    broken = replace(info, params=(replace(info.params[0], identity=0.5), info.params[1]))
    monkeypatch.setitem(CATALOG, "pvlu", broken)
    result = run_job(job_config("pvlu"), tmp_path, files={"weights": str(pretrained_digits)}, device=DEVICE)
    assert result.status == "failed"
    assert result.error["code"] == "conversion_check_failed"
    assert "predicts differently from the original" in result.error["message"]
    assert "training" not in result.report["timings"]


def test_leaky_relu_is_not_held_to_the_at_init_check(tmp_path, pretrained_digits):  # noqa: F811
    result = run_job(job_config("leaky_relu", max_steps=2), tmp_path, files={"weights": str(pretrained_digits)},
                     device=DEVICE)
    assert result.status == "succeeded", result.error
    assert result.report["at_init"]["checked"] is False


def test_nothing_to_train_is_a_clear_error(tmp_path, pretrained_digits):  # noqa: F811
    result = run_job(job_config("relu", trainable="act"), tmp_path, files={"weights": str(pretrained_digits)},
                     device=DEVICE)
    assert result.status == "failed" and result.error["param"] == "train.trainable"
    assert "leaves nothing to train: relu has no learnable parameters" in result.error["message"]


def test_class_count_mismatch_is_reported_before_training(tmp_path, pretrained_digits):  # noqa: F811
    config = job_config("pvlu")
    config["dataset"] = {"uri": "synthetic:5x100", "image_size": IMAGE_SIZE}
    config["model"]["num_classes"] = None
    events: list[dict] = []
    result = run_job(config, tmp_path, files={"weights": str(pretrained_digits)}, device=DEVICE,
                     progress=events.append)
    assert result.status == "failed" and result.error["code"] == "weights_mismatch"
    assert "fc.weight (weights [10, 512], model [5, 512])" in result.error["message"]
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["loading"]
    config["model"]["num_classes"] = 10
    result = run_job(config, tmp_path, files={"weights": str(pretrained_digits)}, device=DEVICE)
    assert result.error["code"] == "invalid_input"
    assert "model.num_classes is 10 but the dataset synthetic:5x100 has 5 classes" in result.error["message"]


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reluswap", "finetune", "--model", "torchvision:resnet18", "--data", "builtin:digits",
         "--activation", "swish", "--strategy", "first", "--out", str(tmp_path)],
        capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "activation: unknown activation 'swish'; accepted: relu" in proc.stderr
    assert "strategy: clause 'first' needs an argument" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "reluswap", "finetune", "--model", "torchvision:resnet18", "--data", "builtin:digits",
         "--activation", "pvlu", "--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)],
        capture_output=True, text=True)
    assert proc.returncode == 2 and "--weights: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_pretrain_cli_refuses_bad_output_name(tmp_path):
    rc = main(["pretrain", "--model", "torchvision:resnet18", "--data", "builtin:digits", "--out",
               str(tmp_path / "w.pkl"), "--quiet"])
    assert rc == 2
