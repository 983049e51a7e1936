"""The trainer on a tiny CNN: steps and schedule, checkpoints, exact resume, cancellation, progress."""

from __future__ import annotations

import pytest
import torch
from model_helpers import tiny_convnet

from converters.conversion import convert
from converters.training import trainable
from service.job_config import DatasetConfig, TrainConfig
from worker.checkpoint import load_checkpoint, rng_state, seed_everything, set_rng_state
from worker.data import load_data
from worker.errors import JobCancelled
from worker.pipeline import compare_predictions
from worker.precision import Precision
from worker.progress import Reporter
from worker.trainer import Trainer

CPU = Precision(torch.device("cpu"))


class Crash(BaseException):
    """Stands in for a killed process: nothing in the job catches it."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(DatasetConfig(uri="synthetic:4x160", image_size=8, augment=True),
                     tmp_path_factory.mktemp("w"))


def _trainer(data, tmp_path, events=None, should_cancel=None, activation="pvlu", **train) -> Trainer:
    model = convert(tiny_convnet(), activation, "all", example_inputs=torch.randn(2, 3, 8, 8)).model
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 16, "seed": 3, **train})
    groups = trainable(model, cfg.trainable, cfg.weight_decay, cfg.threshold_l2)
    reporter = Reporter(events.append if events is not None else None, should_cancel, interval=0.0)
    return Trainer(model, groups, data.train, data.val, cfg, CPU, reporter, tmp_path / "ckpt" / "last.pt", "key")


def _snapshot(trainer: Trainer) -> tuple:
    epochs = [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in trainer.history.epochs]
    return epochs, trainer.history.steps, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_epochs_steps_and_cosine_schedule(data, tmp_path):
    trainer = _trainer(data, tmp_path)
    history = trainer.fit(resume=False)
    assert trainer.steps_per_epoch == len(data.train) // 16  # drop_last: no size-1 BN batch
    assert len(history.epochs) == 3 and len(history.steps) == 3 * trainer.steps_per_epoch
    lrs = [s["lr"] for s in history.steps]
    assert lrs[0] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-5
    ckpt, reason = load_checkpoint(tmp_path / "ckpt" / "last.pt", "key")
    assert reason is None and ckpt["epoch"] == 3 and ckpt["threads"] == torch.get_num_threads()
    _, reason = load_checkpoint(tmp_path / "ckpt" / "last.pt", "another config")
    assert "another config" in reason


def test_max_steps_overrides_epochs_and_constant_schedule(data, tmp_path):
    trainer = _trainer(data, tmp_path, max_steps=10, schedule="constant", optimizer="sgd")
    history = trainer.fit(resume=False)
    assert trainer.epochs == 2 and trainer.total_steps == 10
    assert len(history.steps) == 10 and {s["lr"] for s in history.steps} == {1e-3}
    assert [e["steps"] for e in history.epochs] == [trainer.steps_per_epoch, 10 - trainer.steps_per_epoch]


@pytest.mark.parametrize("activation", ["pvlu", "convrelu"])
def test_crash_in_epoch_2_then_resume_equals_uninterrupted(data, tmp_path, activation):
    reference = _trainer(data, tmp_path / "ref", activation=activation)
    reference.fit(resume=False)

    def crash(event):
        if event["type"] == "progress" and event["epoch"] == 2 and event["step"] == reference.steps_per_epoch + 3:
            raise Crash

    first = _trainer(data, tmp_path / "run", [], activation=activation)
    first.reporter._progress = crash
    with pytest.raises(Crash):
        first.fit()
    torch.manual_seed(1234)  # whatever the dead attempt left in the global RNG must not matter
    events: list[dict] = []
    second = _trainer(data, tmp_path / "run", events, activation=activation)
    second.fit()
    assert second.history.resumed_from_epoch == [1]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [2, 3]
    _same(_snapshot(second), _snapshot(reference))


def test_foreign_or_torn_checkpoint_starts_over(data, tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    path.parent.mkdir()
    path.write_bytes(b"torn")
    events: list[dict] = []
    trainer = _trainer(data, tmp_path, events, epochs=1)
    trainer.fit()
    assert trainer.history.resumed_from_epoch == []
    assert any("unreadable" in e.get("message", "") for e in events)


def test_thread_count_change_is_reported(data, tmp_path):
    _trainer(data, tmp_path, epochs=1).fit()
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    state["threads"] = torch.get_num_threads() + 1
    torch.save(state, tmp_path / "ckpt" / "last.pt")
    events: list[dict] = []
    _trainer(data, tmp_path, events, epochs=2).fit()
    assert any("CPU threads" in e.get("message", "") for e in events if e["type"] == "log")


def test_cancel_is_checked_every_step(data, tmp_path):
    events: list[dict] = []
    steps = lambda: sum(1 for e in events if e["type"] == "progress")  # noqa: E731
    trainer = _trainer(data, tmp_path, events, should_cancel=lambda: steps() >= 5)
    with pytest.raises(JobCancelled):
        trainer.fit()
    assert trainer.step == 5
    last = [e for e in events if e["type"] == "progress"][-1]
    assert {"epoch", "epochs", "step", "steps", "fraction", "loss", "accuracy", "images_per_s", "lr"} <= set(last)


def test_rng_state_round_trip():
    import random

    import numpy as np

    seed_everything(5)
    state = rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a


def test_compare_predictions_allows_only_near_ties():
    before = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0 + 1e-7, 0.0], [0.0, 3.0, 1.0]])
    same = compare_predictions(before, before.clone())
    assert same["prediction_mismatches"] == 0 and same["max_abs_logit_diff"] == 0
    tie_flip = before.clone()
    tie_flip[1] = torch.tensor([1.0 + 2e-7, 1.0, 0.0])
    out = compare_predictions(before, tie_flip)
    assert out["prediction_mismatches"] == 1 and out["near_tie_mismatches"] == 1 and out["unexplained_mismatches"] == 0
    real_flip = before.clone()
    real_flip[0] = torch.tensor([0.0, 2.0, 0.0])
    assert compare_predictions(before, real_flip)["unexplained_mismatches"] == 1
