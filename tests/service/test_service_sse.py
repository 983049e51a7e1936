"""GET /jobs/{id}/events with Accept: text/event-stream: a live stream that ends with the job."""

from __future__ import annotations

import json
import threading
import time


def _frames(text: str) -> list[dict]:
    frames = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            frames.append({"event": fields["event"], "id": fields.get("id"), "data": json.loads(fields["data"])})
    return frames


def _drive(store, job_id: str, delay: float = 0.3) -> threading.Thread:
    """A stand-in worker in another thread: claim, report progress, log, finish."""

    def run():
        time.sleep(delay)
        store.claim(job_id, "w1", 60)
        store.update_progress(job_id, "w1", {"stage": "training", "step": 1, "steps": 2, "fraction": 0.5})
        store.add_event(job_id, "log", "epoch 1 done", data={"epoch": 1})
        time.sleep(0.1)
        store.finish(job_id, "w1", "succeeded", metrics={"final_accuracy": 0.9})

    t = threading.Thread(target=run)
    t.start()
    return t


def test_stream_follows_the_job_until_it_ends(api):  # noqa: F811
    job_id = api.create()["id"]
    worker = _drive(api.store, job_id)
    t0 = time.monotonic()
    with api.client.stream("GET", f"/jobs/{job_id}/events",
                           headers=api.headers(Accept="text/event-stream")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    elapsed = time.monotonic() - t0
    worker.join()
    frames = _frames(text)
    kinds = [f["event"] for f in frames]
    assert kinds[-1] == "end" and frames[-1]["data"] == {"status": "succeeded"}
    assert "log" in kinds and frames[kinds.index("log")]["data"]["message"] == "epoch 1 done"
    statuses = [f["data"]["status"] for f in frames if f["event"] == "job"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    assert any(f["event"] == "job" and (f["data"]["progress"] or {}).get("fraction") == 0.5 for f in frames)
    ids = [int(f["id"]) for f in frames if f["id"]]
    assert ids == sorted(ids) and len(ids) == len(set(ids))  # every event once, in order
    assert 0.3 < elapsed < 5  # it waited for the job, and stopped when it ended


def test_stream_resumes_after_last_event_id(api):  # noqa: F811
    job_id = api.create()["id"]
    first = api.store.add_event(job_id, "log", "one")
    api.store.add_event(job_id, "log", "two")
    api.store.request_cancel(job_id, "alice")
    r = api.client.get(f"/jobs/{job_id}/events",
                       headers=api.headers(Accept="text/event-stream", **{"Last-Event-ID": str(first)}))
    frames = _frames(r.text)
    logs = [f["data"]["message"] for f in frames if f["event"] == "log"]
    assert logs == ["two"] and frames[-1] == {"event": "end", "id": None, "data": {"status": "cancelled"}}


def test_stream_of_an_ended_job_ends_at_once(api):  # noqa: F811
    job_id = api.create()["id"]
    api.finish(job_id, "failed", error={"code": "oom", "message": "out of memory"})
    t0 = time.monotonic()
    r = api.client.get(f"/jobs/{job_id}/events", headers=api.headers(Accept="text/event-stream"))
    assert time.monotonic() - t0 < 2
    assert _frames(r.text)[-1]["data"] == {"status": "failed"}
