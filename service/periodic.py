"""A daemon thread that runs a callable every `interval` seconds until stopped: the reaper's sweep
and a worker's heartbeat. A failing pass is logged and retried at the next one (a database or
broker down for a moment); a pass that returns False ends the thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    def __init__(self, name: str, interval: float, tick: Callable[[], bool | None]):
        super().__init__(daemon=True, name=name)
        self.interval, self._tick = interval, tick
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self._tick() is False:
                    return
            except Exception:
                log.exception("%s: pass failed; retrying in %.1f s", self.name, self.interval)

    def stop(self) -> None:
        self._stop.set()
