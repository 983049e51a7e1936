"""A rich progress bar fed by the pipeline's progress events (worker/progress.py)."""

from __future__ import annotations

import signal
import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

WIDE = 80  # narrower terminals: the stage without the command's name
MIN_BAR = 8


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _text(template: str, **kw) -> TextColumn:
    """A column that never wraps: on a narrow terminal it ends in an ellipsis instead."""
    return TextColumn(template, table_column=Column(no_wrap=True, overflow="ellipsis", **kw))


class ProgressView:
    """Context manager; pass `view.on_event` as the progress callback.

    One bar for the current stage (worker/progress.py): training counts steps, evaluations count
    batches, a stage without a measure pulses. It shows the stage, the ETA and the live loss, and
    fits the terminal's width (the bar shrinks; the detail text ends in an ellipsis)."""

    def __init__(self, title: str, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.title = title
        self.progress = Progress(
            _text("[bold]{task.description}"), BarColumn(bar_width=None), _text("{task.fields[count]}"),
            TimeElapsedColumn(), _text("{task.fields[detail]}"),
            console=self.console, transient=False, expand=True,
        )
        self.task = None
        self.stage: str | None = None

    def __enter__(self):
        if self.enabled:
            self.progress.start()
            self.task = self.progress.add_task(f"{self.title}: starting", total=None, count="", detail="")
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()

    def _stage_label(self, event: dict) -> str:
        stage = event["stage"]
        if "stage_index" in event and "stages" in event and stage != "done":
            stage = f"{stage} {event['stage_index'] + 1}/{event['stages']}"
        return stage if self.console.width < WIDE else f"{self.title}: {stage}"

    def _fit(self, parts: list[str], count: str) -> str:
        """As many of `parts` (most important first) as leave the bar MIN_BAR columns."""
        task = self.progress.tasks[self.task]
        room = self.console.width - len(task.description) - len(count) - MIN_BAR - 7 - 4  # elapsed, gaps
        kept: list[str] = []
        for part in parts:
            if len("  ".join([*kept, part])) > room:
                break
            kept.append(part)
        return "  ".join(kept)

    def on_event(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event.get("type")
        if kind == "stage":
            self.stage = event["stage"]
            done = event["stage"] == "done"
            self.progress.update(self.task, description=self._stage_label(event), total=1 if done else None,
                                 completed=1 if done else 0, count="", detail="")
        elif kind == "progress" and "steps" in event:
            parts = []
            if event.get("eta_seconds") is not None:
                parts.append(f"ETA {format_eta(event['eta_seconds'])}")
            if "loss" in event:
                parts.append(f"loss {event['loss']:.4f}")
            if "accuracy" in event:
                parts.append(f"acc {event['accuracy']:.3f}")
            if event.get("epochs"):
                parts.append(f"epoch {event['epoch']}/{event['epochs']}")
            if "images_per_s" in event:
                parts.append(f"{event['images_per_s']:.0f} img/s")
            count = f"{event['step']}/{event['steps']}"
            self.progress.update(self.task, total=event["steps"], completed=event["step"], count=count,
                                 detail=self._fit(parts, count))
        elif kind == "progress" and "batches" in event:
            self.progress.update(self.task, total=event["batches"], completed=event["batch"],
                                 count=f"{event['batch']}/{event['batches']}", detail="evaluating")
        elif kind == "epoch":
            self.progress.update(self.task, total=event["steps"], completed=event["step"],
                                 count=f"{event['step']}/{event['steps']}")
            self.progress.console.print(
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f} "
                f"acc {event['train_accuracy']:.4f} | val loss {event['val_loss']:.4f} "
                f"acc {event['val_accuracy']:.4f} | {event['images_per_s']:.0f} img/s")
        elif kind == "log":
            style = "yellow" if event.get("level") == "warning" else "dim"
            self.progress.console.print(f"[{style}]{event['message']}[/{style}]")


class CancelOnInterrupt:
    """The first Ctrl-C asks the job to stop cleanly (a `cancelled` result); the second interrupts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ncancelling at the next step (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
