"""Server-sent events for GET /jobs/{id}/events: the job's events as they are written, plus a
`job` event whenever its status or progress changes, until the job ends. The store is polled
(workers write it from other processes; there is no notification channel to listen on)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from .contract import ENDED_STATUSES
from .schemas import Event, Job
from .store import JobStore


def _frame(event: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def api_event(e: dict) -> dict:
    return Event.model_validate({**e, "id": str(e["id"])}).model_dump(mode="json")


async def job_stream(store: JobStore, job_id: str, owner: str, after: int | None,
                     poll_s: float, keepalive_s: float) -> AsyncIterator[str]:
    last_state = None
    last_write = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        # Job first, events second: once the job is seen ended, every event written before the end
        # (finish writes its event in the same transaction) is in the events read that follows.
        job = await run_in_threadpool(store.get_job, job_id, owner)
        events, more = await run_in_threadpool(store.list_events, job_id, after, 100)
        for e in events:
            after = e["id"]
            yield _frame(e["type"], api_event(e), str(e["id"]))
        if job is None:  # deleted while streaming
            yield _frame("end", {"status": None})
            return
        state = (job["status"], job["progress"])
        if state != last_state:
            last_state = state
            yield _frame("job", Job.model_validate(job).model_dump(mode="json"))
        if events:
            last_write = time.monotonic()
        if more:
            continue
        if job["status"] in ENDED_STATUSES:
            yield _frame("end", {"status": job["status"]})
            return
        if time.monotonic() - last_write >= keepalive_s:
            last_write = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_s)
