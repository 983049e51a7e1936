"""JobStore on a SQLite file and on a real PostgreSQL database: every transition, the atomic claim
under real races (threads and processes), and write latency."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from service_helpers import claim_all
from sqlalchemy import update

from service.store import IdempotencyConflict, InvalidCursor, JobEnded, JobNotEnded, JobNotFound, JobStore
from service.tables import jobs

CFG = {"activation": "pvlu"}


@pytest.fixture
def store(store_url):  # noqa: F811
    s = JobStore(store_url)
    yield s
    s.close()


def _age_heartbeat(store: JobStore, job_id: str, seconds: float) -> None:
    with store.engine.begin() as c:
        c.execute(update(jobs).where(jobs.c.id == job_id)
                  .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds)))


def test_engine_settings(store, store_url):  # noqa: F811
    from sqlalchemy import text

    with store.engine.connect() as c:
        if store_url.startswith("sqlite"):
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert c.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
        else:
            assert store.engine.dialect.driver == "psycopg"
    if not store_url.startswith("sqlite"):  # a plain postgresql:// URL gets the psycopg driver too
        plain = JobStore(store_url.replace("postgresql+psycopg://", "postgresql://"), create_tables=False)
        assert plain.engine.dialect.driver == "psycopg"
        plain.ping()
        plain.close()


def test_create_and_get(store):
    job, created = store.create_job("alice", CFG)
    assert created and job["status"] == "queued" and job["attempts"] == 0
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    assert store.get_job(job["id"]) == job
    assert store.get_job(job["id"], owner="alice") == job
    assert store.get_job(job["id"], owner="bob") is None
    assert store.get_job("job_missing") is None


def test_idempotency(store):
    a, created = store.create_job("alice", CFG, idempotency_key="k", request_hash="h1")
    b, again = store.create_job("alice", CFG, idempotency_key="k", request_hash="h1")
    assert created and not again and a["id"] == b["id"]
    with pytest.raises(IdempotencyConflict):
        store.create_job("alice", CFG, idempotency_key="k", request_hash="h2")
    c, created = store.create_job("bob", CFG, idempotency_key="k", request_hash="h1")  # keys are per owner
    assert created and c["id"] != a["id"]
    # After 24 h the key is released and may start a new job.
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == a["id"])
                     .values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    d, created = store.create_job("alice", CFG, idempotency_key="k", request_hash="h2")
    assert created and d["id"] != a["id"]


def test_idempotency_race(store):
    """Concurrent requests with one key: one job; the losers get it back."""
    results, barrier = [], threading.Barrier(4)

    def go():
        barrier.wait()
        results.append(store.create_job("alice", CFG, idempotency_key="race", request_hash="h"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job["id"] for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_list_pagination_and_filter(store):
    ids = [store.create_job("alice", {"n": i})[0]["id"] for i in range(7)]
    store.create_job("bob", CFG)
    seen, after = [], None
    while True:
        page, more = store.list_jobs("alice", limit=3, after=after)
        seen += [j["id"] for j in page]
        if not more:
            break
        after = page[-1]["id"]
    assert seen == ids[::-1]  # newest first, each exactly once
    store.request_cancel(ids[2], "alice")
    cancelled, more = store.list_jobs("alice", status="cancelled")
    assert [j["id"] for j in cancelled] == [ids[2]] and not more
    with pytest.raises(InvalidCursor):
        store.list_jobs("bob", after=ids[0])  # another owner's id is not a cursor


def test_cancel_transitions(store):
    queued = store.create_job("alice", CFG)[0]["id"]
    assert store.request_cancel(queued, "alice")["status"] == "cancelled"
    assert store.claim(queued, "w1", 60) is None  # a cancelled job never runs
    with pytest.raises(JobEnded):
        store.request_cancel(queued, "alice")

    running = store.create_job("alice", CFG)[0]["id"]
    store.claim(running, "w1", 60)
    assert not store.is_cancel_requested(running)
    assert store.request_cancel(running, "alice")["status"] == "cancelling"
    assert store.request_cancel(running, "alice")["status"] == "cancelling"  # repeatable
    assert store.is_cancel_requested(running)
    assert store.finish(running, "w1", "cancelled")
    job = store.get_job(running)
    assert job["status"] == "cancelled" and job["finished_at"]
    with pytest.raises(JobNotFound):
        store.request_cancel(running, "bob")


def test_delete(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    store.add_event(job_id, "log", "hello")
    with pytest.raises(JobNotEnded):
        store.delete_job(job_id, "alice")
    store.request_cancel(job_id, "alice")
    with pytest.raises(JobNotFound):
        store.delete_job(job_id, "bob")
    store.delete_job(job_id, "alice")
    assert store.get_job(job_id) is None and store.list_events(job_id) == ([], False)
    with pytest.raises(JobNotFound):
        store.delete_job(job_id, "alice")


def test_events(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    ids = [store.add_event(job_id, "log", f"m{i}", data={"i": i}) for i in range(5)]
    events, more = store.list_events(job_id)
    assert [e["type"] for e in events] == ["status"] + ["log"] * 5 and not more  # creation is an event
    page, more = store.list_events(job_id, after=ids[1], limit=2)
    assert [e["id"] for e in page] == ids[2:4] and more
    assert page[0]["data"] == {"i": 2} and page[0]["level"] == "info"


def test_worker_lifecycle(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    job = store.claim(job_id, "w1", 60)
    assert job["status"] == "running" and job["attempts"] == 1 and job["worker"] == "w1"
    assert job["started_at"] and job["heartbeat_at"]
    assert store.claim(job_id, "w2", 60) is None  # a live holder keeps it
    assert store.heartbeat(job_id, "w1") and not store.heartbeat(job_id, "w2")
    progress = {"stage": "training", "epoch": 1, "epochs": 3, "step": 10, "steps": 30, "fraction": 0.33}
    assert store.update_progress(job_id, "w1", progress)
    assert not store.update_progress(job_id, "w2", progress)
    assert store.get_job(job_id)["progress"] == progress
    with pytest.raises(ValueError):
        store.finish(job_id, "w1", "running")
    assert not store.finish(job_id, "w2", "succeeded")
    arts = [{"name": "model.onnx", "size": 3}]
    assert store.finish(job_id, "w1", "succeeded", metrics={"final_accuracy": 0.9}, artifacts=arts)
    job = store.get_job(job_id)
    assert job["status"] == "succeeded" and job["metrics"] == {"final_accuracy": 0.9} and job["artifacts"] == arts
    assert not store.heartbeat(job_id, "w1") and not store.finish(job_id, "w1", "failed")
    assert store.claim(job_id, "w2", 0) is None  # ended jobs are never claimed
    assert store.count_by_status()["succeeded"] == 1


def test_stale_reclaim_requeue_fail(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    store.claim(job_id, "w1", 60)
    assert store.stale_jobs(30) == []
    _age_heartbeat(store, job_id, 100)
    assert [j["id"] for j in store.stale_jobs(30)] == [job_id]
    # A redelivered task on another worker takes over the dead claim; the old worker loses it.
    job = store.claim(job_id, "w2", 30)
    assert job["worker"] == "w2" and job["attempts"] == 2
    assert not store.heartbeat(job_id, "w1") and store.heartbeat(job_id, "w2")
    # requeue only while still stale: a live worker keeps the job.
    assert not store.requeue(job_id, stale_after_s=30)
    _age_heartbeat(store, job_id, 100)
    assert store.requeue(job_id, stale_after_s=30)
    job = store.get_job(job_id)
    assert job["status"] == "queued" and job["worker"] is None
    store.claim(job_id, "w3", 30)
    _age_heartbeat(store, job_id, 100)
    assert store.fail(job_id, {"code": "worker_lost", "message": "3 attempts"}, stale_after_s=30)
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "worker_lost" and job["finished_at"]
    assert not store.fail(job_id, {"code": "x", "message": "y"})  # already ended


def test_requeue_of_cancelling_job_ends_it(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    store.claim(job_id, "w1", 60)
    store.request_cancel(job_id, "alice")
    _age_heartbeat(store, job_id, 100)
    assert store.requeue(job_id, stale_after_s=30)
    assert store.get_job(job_id)["status"] == "cancelled"


def test_reclaimed_cancelling_job_stays_cancelling(store):
    job_id = store.create_job("alice", CFG)[0]["id"]
    store.claim(job_id, "w1", 60)
    store.request_cancel(job_id, "alice")
    _age_heartbeat(store, job_id, 100)
    job = store.claim(job_id, "w2", 30)
    assert job["status"] == "cancelling" and store.is_cancel_requested(job_id)


def test_claim_race_threads(store):
    """Two claimers per job released together by a barrier: exactly one wins each job."""
    job_ids = [store.create_job("alice", CFG)[0]["id"] for _ in range(15)]
    wins: dict[str, list[str]] = {"a": [], "b": []}

    def claimer(name, barrier):
        for job_id in job_ids:
            barrier.wait()
            if store.claim(job_id, name, 60) is not None:
                wins[name].append(job_id)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=claimer, args=(n, barrier)) for n in wins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins["a"] + wins["b"]) == sorted(job_ids)
    assert not set(wins["a"]) & set(wins["b"])
    assert all(store.get_job(j)["attempts"] == 1 for j in job_ids)


def test_stale_claim_race_threads(store):
    """Reclaiming a dead worker's job: of two new claimers exactly one takes it."""
    for _ in range(10):
        job_id = store.create_job("alice", CFG)[0]["id"]
        store.claim(job_id, "dead", 60)
        _age_heartbeat(store, job_id, 100)
        won, barrier = [], threading.Barrier(2)

        def claimer(name, job_id=job_id, won=won, barrier=barrier):
            barrier.wait()
            if store.claim(job_id, name, 30) is not None:
                won.append(name)

        threads = [threading.Thread(target=claimer, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and store.get_job(job_id)["attempts"] == 2


def test_claim_race_processes(store, store_url):  # noqa: F811
    """The same race between two processes, each with its own engine (as two Celery workers)."""
    job_ids = [store.create_job("alice", CFG)[0]["id"] for _ in range(40)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(2)  # both children connected before either claims
    procs = [ctx.Process(target=claim_all, args=(store_url, job_ids, f"w{i}", barrier, out)) for i in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    won = results["w0"] + results["w1"]
    assert sorted(won) == sorted(job_ids) and len(set(won)) == len(won)
    assert all(store.get_job(j)["attempts"] == 1 for j in job_ids)


def test_write_latency(store, store_url, record_property):  # noqa: F811
    """A worker's per-update cost (service-infra.md measured 1.6 ms SQLite, 3 ms PostgreSQL)."""
    job_ids = [store.create_job("alice", CFG)[0]["id"] for _ in range(20)]
    t0 = time.perf_counter()
    for job_id in job_ids:
        store.claim(job_id, "w1", 60)
    claim_ms = (time.perf_counter() - t0) / len(job_ids) * 1e3
    t0 = time.perf_counter()
    n = 100
    for i in range(n):
        store.update_progress(job_ids[0], "w1", {"stage": "training", "step": i})
    progress_ms = (time.perf_counter() - t0) / n * 1e3
    backend = store_url.split(":")[0]
    record_property("claim_ms", round(claim_ms, 2))
    record_property("progress_ms", round(progress_ms, 2))
    print(f"\n{backend}: claim {claim_ms:.2f} ms, update_progress {progress_ms:.2f} ms")
    assert claim_ms < 100 and progress_ms < 100  # generous: a loaded 2-core CI box
