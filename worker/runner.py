"""Run one job inside a Celery pool child: claim it, heartbeat, report progress, obey cancel.

The jobs table is the source of truth (docs/design.md): a task may be delivered
twice (visibility timeout, requeue after a crash), so it first claims the job atomically and
gives up when another live worker holds it. The checkpoint directory lives beside the job's
artifacts, so a second attempt resumes where the first died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from service.compare_store import CompareStore
from service.contract import DONE_STAGE, ENDED_STATUSES, STAGES
from service.periodic import Periodic
from service.settings import Settings
from service.storage import LocalStorage
from service.store import JobStore

log = logging.getLogger("reluswap.worker")

PROGRESS_INTERVAL_S = 1.0  # a progress write costs ~2-3 ms; once a second is plenty
CANCEL_POLL_S = 0.5


def worker_id(node: str | None = None) -> str:
    """<Celery node name, or the host>:<pool child pid>:<random>. A pool child runs one job and
    exits, so the pid alone cannot tell two workers apart; the node name (reluswap0-<pid>@host) can."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Heartbeat(Periodic):
    """Keeps the claim alive; notices when it was lost (requeued by the reaper, deleted)."""

    def __init__(self, store: JobStore, job_id: str, worker: str, interval: float):
        super().__init__(f"heartbeat-{job_id}", interval, self._beat)
        self.store, self.job_id, self.worker = store, job_id, worker
        self.lost = threading.Event()

    def _beat(self) -> bool:
        if not self.store.heartbeat(self.job_id, self.worker):
            self.lost.set()
            return False  # the claim is gone: stop beating
        return True


class _Reporter:
    """Pipeline events -> the job record (throttled progress) and the job's event log."""

    def __init__(self, store: JobStore, job_id: str, worker: str, heartbeat: _Heartbeat):
        self.store, self.job_id, self.worker, self.heartbeat = store, job_id, worker, heartbeat
        self.progress: dict = {}
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    # A stage change starts the progress object afresh: {stage, stage_index, stages, overall} plus
    # what that stage reports (training: epoch, step, ..., eta_seconds; evaluation: batch, batches).
    STAGE_KEYS = ("stage", "stage_index", "stages", "fraction", "overall")
    PROGRESS_KEYS = ("epoch", "epochs", "step", "steps", "fraction", "overall", "loss", "accuracy",
                     "images_per_s", "lr", "eta_seconds", "batch", "batches")

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "stage":
            self.progress = {k: event[k] for k in self.STAGE_KEYS if k in event}
            self.store.add_event(self.job_id, "stage", f"stage {event['stage']}", data={"stage": event["stage"]})
            self._write(force=True)
        elif kind == "progress":
            if event.get("stage") != self.progress.get("stage"):
                return  # a late report of a stage already left
            self.progress = {**self.progress, **{k: event[k] for k in self.PROGRESS_KEYS if k in event}}
            self._write(force=event.get("step") is not None and event.get("step") == event.get("steps"))
        elif kind == "epoch":
            data = {k: v for k, v in event.items() if k not in ("type", "time")}
            self.store.add_event(self.job_id, "epoch", f"epoch {event.get('epoch')} done", data=data)
            self._write(force=True)
        elif kind == "log":
            self.store.add_event(self.job_id, "log", event.get("message", ""), level=event.get("level", "info"))

    def done(self) -> None:
        """A succeeded job's last progress: stage done, fraction 1.0 (written even if the pipeline's
        own end marker was throttled away or never sent)."""
        if self.progress.get("stage") != DONE_STAGE:
            self.progress = {"stage": DONE_STAGE, "stage_index": len(STAGES), "stages": len(STAGES),
                             "fraction": 1.0, "overall": 1.0}
        self._write(force=True)

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_write >= PROGRESS_INTERVAL_S:
            self._last_write = now
            if not self.store.update_progress(self.job_id, self.worker, self.progress):
                self.heartbeat.lost.set()

    def should_cancel(self) -> bool:
        if self.heartbeat.lost.is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            self._cancelled = self.store.is_cancel_requested(self.job_id)
        return self._cancelled


def _claim(store: JobStore, job_id: str, worker: str, settings: Settings) -> dict | None:
    """Claim the job; while another worker's heartbeat is fresh, wait for it to go stale (a killed
    pool child leaves a fresh heartbeat behind) rather than run the job twice."""
    deadline = time.monotonic() + settings.heartbeat_timeout_s * 1.5
    while True:
        job = store.claim(job_id, worker, stale_after_s=settings.heartbeat_timeout_s)
        if job is not None:
            return job
        current = store.get_job(job_id)
        if current is None or current["status"] in ENDED_STATUSES:
            return None  # deleted, cancelled or ended: nothing to do
        if time.monotonic() > deadline:
            log.warning("job %s is held by a live worker (%s); not running it twice", job_id, current.get("worker"))
            return None
        time.sleep(min(1.0, settings.heartbeat_timeout_s / 4))


def execute(job_id: str, settings: Settings, node: str | None = None) -> str:
    """Run job `job_id` to its end; returns the final status (or "skipped"). node: the Celery
    worker's name, recorded in the worker id."""
    from worker.pipeline import run_job  # torch is imported here, in the child

    store = JobStore(settings.database_url)  # engines are created after fork
    storage = LocalStorage(settings.storage_dir)
    worker = worker_id(node)
    job = _claim(store, job_id, worker, settings)
    if job is None:
        return "skipped"
    heartbeat = _Heartbeat(store, job_id, worker, interval=max(0.5, settings.heartbeat_timeout_s / 4))
    heartbeat.start()
    reporter = _Reporter(store, job_id, worker, heartbeat)
    job_dir = storage.job_dir(job_id)
    try:
        files, measure_only = _compare_inputs(store, storage, job)  # inside: an error fails the job, named
        result = run_job(
            job["config"],
            storage.artifacts_dir(job_id),
            progress=reporter,
            should_cancel=reporter.should_cancel,
            files=files,
            checkpoint_dir=job_dir / "checkpoints",
            work_dir=job_dir / "work",
            allowed_data_roots=settings.allowed_data_roots,
            measure_only=measure_only,
            tracking_uri=settings.mlflow_tracking_uri,
        )
        status, metrics, error = result.status, result.metrics, result.error
    except Exception as err:  # a bug, not bad input: fail the job with what we know
        log.exception("job %s crashed", job_id)
        status, metrics, error = "failed", None, {"code": "internal_error", "message": f"{type(err).__name__}: {err}"}
    finally:
        heartbeat.stop()
    if heartbeat.lost.is_set():
        log.warning("job %s: claim lost (requeued or deleted); not recording %s", job_id, status)
        return "lost"
    if status == "succeeded":
        reporter.done()
    store.finish(job_id, worker, status, metrics=metrics, error=error, artifacts=storage.list_artifacts(job_id))
    if job.get("compare_id"):
        _advance_compare(store, storage, settings, job["compare_id"])
    return status


def _compare_inputs(store: JobStore, storage: LocalStorage, job: dict) -> tuple[dict, bool]:
    """A child of a compare job reads the uploads stored once under the compare, and the original's
    measurement; the original itself only measures."""
    compare_id = job.get("compare_id")
    if not compare_id:
        return storage.uploads(job["id"]), False
    files = storage.uploads(compare_id)
    if job["child_kind"] == "original":
        return files, True
    original = CompareStore(store).original(compare_id)
    files["original"] = storage.artifacts_dir(original["id"])
    return files, False


def _advance_compare(store: JobStore, storage: LocalStorage, settings: Settings, compare_id: str) -> None:
    """After a child ended: dispatch, or write the leaderboard when it was the last. A failure here
    is logged only: the reaper advances every unfinished compare too."""
    from service.compares import advance
    from service.queue import CeleryQueue

    try:
        advance(CompareStore(store), storage, CeleryQueue(settings), compare_id, settings.compare_alpha)
    except Exception:
        log.exception("compare %s: advancing after a child ended failed (the reaper will retry)", compare_id)
