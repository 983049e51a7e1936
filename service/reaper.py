"""The reaper: jobs whose worker went silent are requeued, or failed after max_attempts.

Redis only redelivers an unacked task after the visibility timeout, which must exceed the
longest job, so a crashed worker's job would wait hours. The heartbeat column says sooner: when
it is older than heartbeat_timeout_s the job goes back to the queue (a new task message, same
job id); the next worker's claim resumes it from its checkpoint.
"""

from __future__ import annotations

import logging

from .compare_store import CompareStore
from .compares import advance
from .contract import ENDED_STATUSES
from .periodic import Periodic
from .queue import JobQueue
from .settings import Settings
from .storage import LocalStorage
from .store import JobStore

log = logging.getLogger("reluswap.reaper")


def sweep(store: JobStore, queue: JobQueue, settings: Settings, storage: LocalStorage | None = None
          ) -> list[tuple[str, str]]:
    """One pass; returns (job or compare id, action) for every one it touched."""
    actions = []
    stale_after = settings.heartbeat_timeout_s
    for job in store.stale_jobs(stale_after):
        job_id = job["id"]
        if job["attempts"] >= settings.max_attempts:
            error = {
                "code": "worker_lost",
                "message": f"the worker stopped responding on each of {job['attempts']} attempts",
            }
            if store.fail(job_id, error, stale_after_s=stale_after):
                actions.append((job_id, "failed"))
        elif store.requeue(job_id, stale_after_s=stale_after):
            current = store.get_job(job_id)
            if current is not None and current["status"] == "queued":
                queue.send(job_id)
                actions.append((job_id, "requeued"))
            else:
                actions.append((job_id, "cancelled"))
    for job_id, action in actions:
        log.warning("reaper: job %s %s", job_id, action)
    actions += advance_compares(store, queue, settings, storage or LocalStorage(settings.storage_dir))
    return actions


def advance_compares(store: JobStore, queue: JobQueue, settings: Settings, storage: LocalStorage
                     ) -> list[tuple[str, str]]:
    """Compares whose last child's worker died before the leaderboard (or before dispatching):
    advance() is idempotent, so doing it again here is safe."""
    compares, actions = CompareStore(store), []
    for compare_id in compares.unfinished():
        try:
            status = advance(compares, storage, queue, compare_id, settings.compare_alpha)
        except Exception:
            log.exception("reaper: compare %s could not be advanced", compare_id)
            continue
        if status in ENDED_STATUSES:
            actions.append((compare_id, status))
    return actions


class Reaper(Periodic):
    """Runs sweep() every interval seconds until stopped."""

    def __init__(self, store: JobStore, queue: JobQueue, settings: Settings, interval: float | None = None):
        interval = interval if interval is not None else max(0.5, settings.heartbeat_timeout_s / 2)
        storage = LocalStorage(settings.storage_dir)
        super().__init__("reluswap-reaper", interval, lambda: sweep(store, queue, settings, storage))
        self.store, self.queue, self.settings = store, queue, settings
