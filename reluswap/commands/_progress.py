"""A rich progress bar fed by the pipeline's progress events (worker/progress.py)."""

from __future__ import annotations

import signal
import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressView:
    """Context manager; pass `view.on_event` as the progress callback."""

    def __init__(self, title: str, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.title = title
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"), console=self.console, transient=False,
        )
        self.task = None

    def __enter__(self):
        if self.enabled:
            self.progress.start()
            self.task = self.progress.add_task(f"{self.title}: starting", total=None, detail="")
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()

    def on_event(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event.get("type")
        if kind == "stage":
            self.progress.update(self.task, description=f"{self.title}: {event['stage']}")
        elif kind == "progress" and "steps" in event:
            detail = ""
            if "loss" in event:
                detail = (f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}  "
                          f"acc {event['accuracy']:.3f}  {event['images_per_s']:.0f} img/s")
            self.progress.update(self.task, total=event["steps"], completed=event["step"], detail=detail)
        elif kind == "epoch":
            self.progress.update(self.task, total=event["steps"], completed=event["step"])
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
