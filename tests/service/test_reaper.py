"""The reaper: stale jobs are requeued (and re-sent), or failed after max_attempts; live ones are left
alone. A real JobStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

from service_helpers import valid_config

from service.queue import MemoryQueue
from service.reaper import sweep
from service.settings import Settings
from service.store import JobStore


def _running(store: JobStore, worker: str = "w1") -> str:
    job, _ = store.create_job("alice", valid_config())
    assert store.claim(job["id"], worker, stale_after_s=60) is not None
    return job["id"]


def test_sweep(store_url, tmp_path):  # noqa: F811
    store = JobStore(store_url)
    queue = MemoryQueue()
    settings = Settings(data_dir=tmp_path, heartbeat_timeout_s=1.5, max_attempts=2)
    stale = _running(store)
    cancelling = _running(store)
    store.request_cancel(cancelling, "alice")
    exhausted = _running(store)
    store.requeue(exhausted)
    assert store.claim(exhausted, "w2", stale_after_s=60)["attempts"] == 2
    time.sleep(1.7)
    alive = _running(store)  # fresh heartbeat: its worker is alive

    actions = dict(sweep(store, queue, settings))
    assert actions == {stale: "requeued", cancelling: "cancelled", exhausted: "failed"}
    assert store.get_job(stale)["status"] == "queued" and stale in queue.sent
    assert store.get_job(cancelling)["status"] == "cancelled" and cancelling not in queue.sent
    failed = store.get_job(exhausted)
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost"
    assert store.get_job(alive)["status"] == "running"
    # The requeued job is claimed again as attempt 2, and a second sweep leaves everything alone.
    assert store.claim(stale, "w3", stale_after_s=1.5)["attempts"] == 2
    assert sweep(store, queue, settings) == []
    store.close()
