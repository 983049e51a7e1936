"""Progress that tells the truth: the job record's progress object through worker/runner.py (a real
JobStore on SQLite), the events run_job sends (stages in order, each with its own fraction; the ETA
of training), and the Reporter's ETA arithmetic."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import pytest

from service.contract import DONE_STAGE, STAGES
from service.settings import Settings
from service.store import JobStore
from worker import runner
from worker.pipeline import run_job
from worker.progress import Reporter, overall_fraction

TRAINING_KEYS = {"epoch", "epochs", "step", "steps", "loss", "accuracy", "images_per_s", "lr", "eta_seconds"}


def tiny_config(**extra) -> dict:
    """The cheapest real job: random resnet18 on digits at 16 px, a few steps, no exports."""
    return {
        "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "none"},
        "dataset": {"uri": "builtin:digits", "image_size": 16, "val_split": 0.2},
        "activation": "pvlu",
        "train": {"max_steps": 4, "batch_size": 32, "seed": 0, "stats_batches": 2},
        "export": {"onnx": False, "pt2": False},
        **extra,
    }


def test_overall_fraction_weighs_the_stages():
    assert overall_fraction("loading") == 0.0
    assert overall_fraction("training", 0.0) == pytest.approx(0.15)
    assert overall_fraction("training", 1.0) == pytest.approx(0.85)
    assert overall_fraction("exporting", 1.0) == pytest.approx(1.0)
    assert overall_fraction(DONE_STAGE) == 1.0


def test_eta_is_steps_left_times_the_mean_step_time_without_the_first(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 11.0, 13.0, 14.0])  # the constructor, start_window, steps 1-4
    monkeypatch.setattr("worker.progress.time", SimpleNamespace(perf_counter=lambda: next(clock), time=time.time))
    events = []
    reporter = Reporter(events.append, interval=0.0)
    reporter.stage_name = "training"
    reporter.start_window()
    for step in range(1, 5):
        reporter.step(32, step=step, steps=6, fraction=step / 6, loss=1.0, lr=0.1)
    progress = [e for e in events if e["type"] == "progress"]
    # Step 1 took 10 s (compiling): not counted. Steps 2..4 took 1, 2, 1 s: mean 4/3 s.
    assert "eta_seconds" not in progress[0]
    assert [e["eta_seconds"] for e in progress[1:]] == pytest.approx([4 * 1.0, 3 * 1.5, 2 * 4 / 3], abs=1e-3)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]


def test_run_job_events_eta_and_stage_progress(tmp_path):
    events: list[dict] = []
    result = run_job(tiny_config(), tmp_path / "out", progress=events.append, progress_interval=0.0)
    assert result.succeeded, result.error

    stages = [e for e in events if e["type"] == "stage"]
    assert [e["stage"] for e in stages] == [*STAGES, DONE_STAGE]
    assert [e["stage_index"] for e in stages] == list(range(len(STAGES) + 1))
    assert stages[-1]["fraction"] == 1.0 and stages[-1]["overall"] == 1.0
    assert events[-1] == {"type": "end", "status": "succeeded", "time": events[-1]["time"]}

    # Each evaluating stage reports its batches as its own fraction, up to 1.
    for stage in ("baseline", "converting", "verifying"):
        own = [e for e in events if e["type"] == "progress" and e["stage"] == stage]
        assert own and own[-1]["fraction"] == 1.0 and own[-1]["batch"] == own[-1]["batches"], stage
        assert all(not (TRAINING_KEYS & e.keys()) for e in own), stage

    # Training: an ETA from the second step on, shrinking to 0 at the last step.
    training = [e for e in events if e["type"] == "progress" and e["stage"] == "training" and e["step"] > 0]
    assert [e["step"] for e in training] == [1, 2, 3, 4]
    etas = [e["eta_seconds"] for e in training[1:]]
    assert "eta_seconds" not in training[0]
    assert all(eta >= 0 for eta in etas) and etas[-1] == 0.0
    assert etas == sorted(etas, reverse=True)
    # The overall fraction never goes back.
    overall = [e["overall"] for e in events if "overall" in e]
    assert overall == sorted(overall) and overall[-1] == 1.0


def test_runner_progress_of_a_succeeded_job(tmp_path, monkeypatch):
    """Through worker/runner.py with a real JobStore on SQLite: every progress object written has the
    current stage's fields only, and the succeeded job ends at stage done, fraction 1.0."""
    settings = Settings(data_dir=tmp_path / "data")
    store = JobStore(settings.database_url)
    job, _ = store.create_job("alice", tiny_config())
    written: list[dict] = []
    real = JobStore.update_progress

    def record(self, job_id, worker_id, progress):
        written.append(copy.deepcopy(progress))
        return real(self, job_id, worker_id, progress)

    monkeypatch.setattr(JobStore, "update_progress", record)
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL_S", 0.0)  # every report written

    assert runner.execute(job["id"], settings) == "succeeded"
    final = store.get_job(job["id"])
    assert final["status"] == "succeeded"
    assert final["progress"] == {"stage": "done", "stage_index": len(STAGES), "stages": len(STAGES),
                                 "fraction": 1.0, "overall": 1.0}

    seen = [p["stage"] for p in written]
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [*STAGES, DONE_STAGE]
    for p in written:
        assert p["stage_index"] == [*STAGES, DONE_STAGE].index(p["stage"]) and p["stages"] == len(STAGES)
        if p["stage"] != "training":
            assert not (TRAINING_KEYS & p.keys()), p  # the training fields do not linger
    training = [p for p in written if p["stage"] == "training" and p.get("step")]
    assert training[-1]["step"] == training[-1]["steps"] == 4 and training[-1]["fraction"] == 1.0
    assert training[-1]["eta_seconds"] == 0.0
    # (evaluation fractions are throttled by the pipeline's 2 s interval: a fast stage may show none)

    events, _ = store.list_events(job["id"], limit=1000)
    assert [e["data"]["stage"] for e in events if e["type"] == "stage"] == [*STAGES, DONE_STAGE]
