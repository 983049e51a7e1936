"""The reaper as its own container (docker-compose.yml): requeues or fails jobs whose worker went silent.

The embedded deployment runs the same Reaper in a thread of its supervisor; in compose nothing else
would, so a crashed worker's job would wait for the broker's visibility timeout (hours). Sweeps are
atomic in the job table, so a second reaper would be harmless. Needs no torch: runs in the API image.
"""

import logging
import signal
import threading

from service.queue import CeleryQueue
from service.reaper import Reaper
from service.settings import Settings
from service.store import JobStore


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = Settings()
    reaper = Reaper(JobStore(settings.database_url), CeleryQueue(settings), settings)
    reaper.start()
    logging.getLogger("reluswap.reaper").info("sweeping every %.1f s", reaper.interval)
    stop.wait()
    reaper.stop()


if __name__ == "__main__":
    main()
