"""Optional trackers (worker/tracking.py): a real local MLflow store (SQLite in tmp_path) and
TensorBoard event files, read back and compared to report.json; a failing tracker never fails a job."""

from __future__ import annotations

import json

import pytest

from worker.pipeline import run_job
from worker.tracking import TENSORBOARD_DIR, Tracking, flatten_config


def tiny_config(**tracking) -> dict:
    """Two epochs of a few big batches (random resnet18, digits at 16 px), no exports."""
    return {
        "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "none"},
        "dataset": {"uri": "builtin:digits", "image_size": 16, "val_split": 0.2},
        "activation": "pvlu",
        "train": {"max_steps": 7, "batch_size": 256, "seed": 0, "stats_batches": 1},
        "export": {"onnx": False, "pt2": False},
        "tracking": tracking,
    }


def test_mlflow_and_tensorboard_match_the_report(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    events: list[dict] = []
    result = run_job(tiny_config(tensorboard=True, mlflow=True), out, progress=events.append, tracking_uri=uri)
    assert result.succeeded, result.error
    assert not [e for e in events if e["type"] == "log" and e["level"] == "warning"]
    report = json.loads((out / "report.json").read_text())
    epochs, steps = report["training"]["epochs"], report["training"]["steps"]
    assert len(epochs) == 2 and len(steps) == 7

    # MLflow: params are the flattened config, per-epoch metrics are report.json's epochs, artifacts.
    info = report["tracking"]["mlflow"]
    assert info["tracking_uri"] == uri and "error" not in info
    client = MlflowClient(uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params == flatten_config(report["config"])
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "images_per_s", "lr"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [e["epoch"] for e in epochs], key
        assert [m.value for m in history] == pytest.approx([e[key] for e in epochs]), key
    assert run.data.metrics["final_accuracy"] == pytest.approx(report["metrics"]["final_accuracy"])
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html", "metrics.csv"} <= listed
    assert {p.name for p in out.glob("*.png")} <= listed and any(n.endswith(".png") for n in listed)

    # TensorBoard: event files at the top of tensorboard/, scalars as in report.json.
    assert report["tracking"]["tensorboard"] == {"dir": TENSORBOARD_DIR}
    files = list((out / TENSORBOARD_DIR).iterdir())
    assert files and all(f.is_file() and f.name.startswith("events.out.tfevents") for f in files)
    acc = EventAccumulator(str(out / TENSORBOARD_DIR))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [s.step for s in loss] == [s["step"] for s in steps]
    assert [s.value for s in loss] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    lr = acc.Scalars("train/lr")
    assert [s.value for s in lr] == pytest.approx([s["lr"] for s in steps], rel=1e-6)
    for key in ("train_loss", "train_accuracy", "val_accuracy", "images_per_s"):
        got = acc.Scalars(f"epoch/{key}")
        assert [s.step for s in got] == [e["epoch"] for e in epochs], key
        assert [s.value for s in got] == pytest.approx([e[key] for e in epochs], rel=1e-6), key
    assert "config" in acc.Tags()["tensors"] or "config/text_summary" in acc.Tags()["tensors"]


class _Broken:
    name = "broken"

    def __init__(self):
        self.closed = False
        self.seen = 0

    def handle(self, event):
        self.seen += 1
        raise RuntimeError("tracking server down")

    def close(self):
        self.closed = True


def test_a_failing_tracker_is_a_warning_and_is_dropped():
    passed: list[dict] = []
    tracking = Tracking(passed.append)
    broken = _Broken()
    tracking.open("broken", lambda info: broken)
    tracking.open("missing", lambda info: (_ for _ in ()).throw(ImportError("No module named 'mlflow'")))
    tracking({"type": "epoch", "epoch": 1})
    tracking({"type": "epoch", "epoch": 2})
    assert broken.seen == 1 and broken.closed and tracking.trackers == []
    warnings = [e for e in passed if e["type"] == "log"]
    assert [e["level"] for e in warnings] == ["warning", "warning"]
    assert "missing" in warnings[0]["message"] and "tracking server down" in warnings[1]["message"]
    assert [e["epoch"] for e in passed if e["type"] == "epoch"] == [1, 2]  # the job's own events go on
    assert tracking.describe() == {"broken": {"error": "RuntimeError: tracking server down"},
                                   "missing": {"error": "ImportError: No module named 'mlflow'"}}


def test_tracking_is_off_by_default_and_strict():
    from service.job_config import ConfigError, parse_config

    cfg = parse_config(tiny_config())
    assert cfg.tracking.tensorboard is False and cfg.tracking.mlflow is False
    with pytest.raises(ConfigError, match="tracking"):
        parse_config(tiny_config(wandb=True))
