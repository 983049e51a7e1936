"""Progress events and cooperative cancellation, free of any queue: the caller plugs in callables.

Events are plain dicts with a "type":
- {"type": "stage", "stage": <name>, "time": ...}          on every stage change
- {"type": "progress", "stage": "training", "epoch", "epochs", "step", "steps", "fraction",
   "loss", "accuracy", "images_per_s", "lr", "time"}       during training, every `interval` s
- {"type": "epoch", "epoch", "epochs", "train_loss", "train_accuracy", "val_loss",
   "val_accuracy", "lr", "seconds", "time"}                at the end of every epoch
- {"type": "log", "level": "info"|"warning", "message", "time"}

Stages, in order: loading, baseline, converting, training, verifying, exporting (the names of the
job object's progress.stage in docs/api.md; defined in service/contract.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.contract import STAGES

from .errors import JobCancelled


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
        self._last = 0.0
        self._window_images = 0
        self._window_start = time.perf_counter()

    def emit(self, event: dict) -> None:
        if self._progress is not None:
            self._progress({**event, "time": time.time()})

    def stage(self, name: str, **fields) -> None:
        assert name in STAGES, name
        self.stage_name = name
        self.emit({"type": "stage", "stage": name, **fields})

    def log(self, message: str, level: str = "info") -> None:
        self.emit({"type": "log", "level": level, "message": message})

    def check_cancel(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise JobCancelled(f"cancelled during {self.stage_name or 'setup'}")

    def start_window(self) -> None:
        self._window_images = 0
        self._window_start = self._last = time.perf_counter()

    def step(self, images: int, force: bool = False, **fields) -> None:
        """Count a training step; emit a progress event when `interval` seconds have passed."""
        self._window_images += images
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        elapsed = max(now - self._window_start, 1e-9)
        self.emit({"type": "progress", "stage": self.stage_name, **fields,
                   "images_per_s": self._window_images / elapsed})
        self._window_images = 0
        self._window_start = self._last = now
