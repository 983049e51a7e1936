"""Progress events and cooperative cancellation, free of any queue: the caller plugs in callables.

Events are plain dicts with a "type":
- {"type": "stage", "stage", "stage_index", "stages", "overall", "time"}   on every stage change;
  stage_index counts the stages before this one (0-based), stages is len(STAGES). The last one of a
  succeeded job is stage "done" (stage_index == stages, fraction 1.0, overall 1.0)
- {"type": "progress", "stage": "training", "epoch", "epochs", "step", "steps", "fraction", "overall",
   "loss", "accuracy", "images_per_s", "lr", "eta_seconds", "time"}   during training, every `interval`
  s and at the last step; eta_seconds once a step after the attempt's first was timed
- {"type": "progress", "stage", "batch", "batches", "fraction", "overall", "time"}   while evaluating
  outside training (baseline, converting, verifying), every `interval` s
- {"type": "step", "step", "epoch", "loss", "lr", "time"}   every training step, unthrottled (trackers)
- {"type": "epoch", "epoch", "epochs", "train_loss", "train_accuracy", "val_loss",
   "val_accuracy", "lr", "seconds", "time"}                at the end of every epoch
- {"type": "log", "level": "info"|"warning", "message", "time"}
- {"type": "end", "status": "succeeded"|"failed"|"cancelled"|"crashed", "time"}   last, once

`fraction` is the current stage's own fraction; `overall` weighs the stages by STAGE_WEIGHTS.
Stages, in order: loading, baseline, converting, training, verifying, exporting (the names of the
job object's progress.stage in docs/api.md; defined in service/contract.py), then done.

ETA (training): steps left x the mean time of the steps timed in this attempt, the attempt's first
step excluded (it may compile, warm up caches or load the first batch). A step's time runs from the
previous step's report (or the start of its epoch) to its own, so validation between epochs is not
counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.contract import DONE_STAGE, PROGRESS_STAGES, STAGE_WEIGHTS, STAGES

from .errors import JobCancelled


def overall_fraction(stage: str, fraction: float = 0.0) -> float:
    """The whole job's fraction: the weights of the stages before `stage` plus its share done."""
    if stage == DONE_STAGE:
        return 1.0
    before = sum(STAGE_WEIGHTS[s] for s in STAGES[:STAGES.index(stage)])
    return round(min(1.0, before + STAGE_WEIGHTS[stage] * min(max(fraction, 0.0), 1.0)), 4)


class Reporter:
    def __init__(
        self,
        progress: Callable[[dict], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        interval: float = 2.0,
    ):
        self._progress = progress
        self._should_cancel = should_cancel
        self.interval = interval
        self.stage_name: str | None = None
        self.ended: str | None = None
        self._last = 0.0
        self._window_images = 0
        self._window_start = time.perf_counter()
        # ETA: step times of this attempt, its first step excluded.
        self._step_mark = self._window_start
        self._steps_seen = 0
        self._timed_steps = 0
        self._timed_seconds = 0.0
        self._last_batches = 0.0

    def emit(self, event: dict) -> None:
        if event.get("type") == "progress" and "fraction" in event and "overall" not in event \
                and event.get("stage") in STAGES:
            event = {**event, "overall": overall_fraction(event["stage"], event["fraction"])}
        if self._progress is not None:
            self._progress({**event, "time": time.time()})

    def stage(self, name: str, **fields) -> None:
        assert name in PROGRESS_STAGES, name
        self.stage_name = name
        self._last_batches = time.perf_counter()  # the stage's first evaluation report after `interval`
        self.emit({"type": "stage", "stage": name, "stage_index": PROGRESS_STAGES.index(name),
                   "stages": len(STAGES), "overall": overall_fraction(name), **fields})

    def done(self) -> None:
        """The end marker of a succeeded job: stage done, fraction 1.0."""
        self.stage(DONE_STAGE, fraction=1.0)

    def end(self, status: str) -> None:
        """The last event (trackers close on it); once."""
        if self.ended is None:
            self.ended = status
            self.emit({"type": "end", "status": status})

    def log(self, message: str, level: str = "info") -> None:
        self.emit({"type": "log", "level": level, "message": message})

    def check_cancel(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise JobCancelled(f"cancelled during {self.stage_name or 'setup'}")

    def start_window(self) -> None:
        self._window_images = 0
        self._window_start = self._last = self._step_mark = time.perf_counter()

    def eta_seconds(self, steps_left: int) -> float | None:
        if self._timed_steps == 0:
            return None
        return max(steps_left, 0) * self._timed_seconds / self._timed_steps

    def step(self, images: int, force: bool = False, **fields) -> None:
        """Count a training step; emit a progress event when `interval` seconds have passed (and at
        the last step)."""
        now = time.perf_counter()
        if self._steps_seen:
            self._timed_steps += 1
            self._timed_seconds += now - self._step_mark
        self._steps_seen += 1
        self._step_mark = now
        self._window_images += images
        if "step" in fields:
            self.emit({"type": "step", **{k: fields[k] for k in ("step", "epoch", "loss", "lr") if k in fields}})
        last = "steps" in fields and fields.get("step") == fields["steps"]
        if not (force or last) and now - self._last < self.interval:
            return
        elapsed = max(now - self._window_start, 1e-9)
        event = {"type": "progress", "stage": self.stage_name, **fields,
                 "images_per_s": self._window_images / elapsed}
        if "steps" in fields and "step" in fields:
            eta = self.eta_seconds(fields["steps"] - fields["step"])
            if eta is not None:
                event["eta_seconds"] = round(eta, 3)
        self.emit(event)
        self._window_images = 0
        self._window_start = self._last = now

    def batches(self, done: int, total: int | None) -> None:
        """An evaluation's progress, as its stage's fraction: throttled, and not while training (the
        per-epoch validation would replace the training fields)."""
        if self.stage_name in (None, "training", DONE_STAGE) or not total:
            return
        now = time.perf_counter()
        if now - self._last_batches < self.interval:
            return
        self._last_batches = now
        fraction = min(done / total, 1.0)
        self.emit({"type": "progress", "stage": self.stage_name, "batch": done, "batches": total,
                   "fraction": round(fraction, 4)})
