"""Job routes: list, retrieve, cancel, delete, events (JSON pages or a live SSE stream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..deps import OwnedJob, Owner, QueueDep, SettingsDep, StorageDep, StoreDep
from ..errors import ApiError, log, responses
from ..schemas import EventList, Job, JobList, JobStatus
from ..sse import api_event, job_stream
from ..store import InvalidCursor, JobEnded, JobNotEnded, JobNotFound

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, f"no job {job_id!r}", "job_not_found", "job_id")


@router.get("", response_model=JobList, responses=responses(401, 422), summary="List your jobs, newest first")
def list_jobs(
    owner: Owner,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, description="id of the last job of the previous page")] = None,
    status: JobStatus | None = None,
    compare_id: Annotated[str | None, Query(max_length=64, description="only the children of this compare job")] = None,
) -> dict:
    try:
        data, has_more = store.list_jobs(owner, limit=limit, after=after, status=status, compare_id=compare_id)
    except InvalidCursor as err:
        raise ApiError(422, str(err), "invalid_cursor", "after") from None
    return {"data": data, "has_more": has_more}


@router.get("/{job_id}", response_model=Job, responses=responses(401, 404), summary="Retrieve a job")
def get_job(job: OwnedJob) -> dict:
    return job


@router.delete("/{job_id}", status_code=204, response_class=Response, responses=responses(401, 404, 409),
               summary="Delete an ended job and its files")
def delete_job(job_id: str, owner: Owner, store: StoreDep, storage: StorageDep) -> Response:
    job = store.get_job(job_id, owner)
    if job is not None and job["compare_id"]:  # its leaderboard reads it: it goes with its compare job
        raise ApiError(409, f"job {job_id} is a child of compare job {job['compare_id']}: delete the compare job",
                       "job_in_compare", "job_id")
    try:
        store.delete_job(job_id, owner)
    except JobNotFound:
        raise _not_found(job_id) from None
    except JobNotEnded as err:
        raise ApiError(409, str(err), "job_not_ended", "job_id") from None
    storage.delete_job(job_id)
    return Response(status_code=204)


@router.post("/{job_id}/cancel", response_model=Job, responses=responses(401, 404, 409),
             summary="Request cancellation")
def cancel_job(job_id: str, owner: Owner, store: StoreDep, queue: QueueDep) -> dict:
    try:
        job = store.request_cancel(job_id, owner)
    except JobNotFound:
        raise _not_found(job_id) from None
    except JobEnded as err:
        raise ApiError(409, str(err), "job_ended", "job_id") from None
    if job["status"] == "cancelled":
        try:  # it never started: drop its message too (the worker's claim refuses it anyway)
            queue.revoke(job_id)
        except Exception as err:
            log.warning("revoke of %s failed: %s", job_id, err)
    return job


_SSE_DOC = {"text/event-stream": {"schema": {"type": "string"},
                                  "description": "with Accept: text/event-stream: events until the job ends"}}


@router.get("/{job_id}/events", response_model=EventList,
            responses={200: {"content": _SSE_DOC}, **responses(401, 404, 422)},
            summary="Progress and log events, oldest first (or a live stream)")
async def list_events(
    job: OwnedJob,
    owner: Owner,
    store: StoreDep,
    settings: SettingsDep,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="id of the last event seen")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    if accept and "text/event-stream" in accept:
        if after is None and last_event_id and last_event_id.isdigit():
            after = int(last_event_id)  # a reconnecting EventSource resumes where it stopped
        stream = job_stream(store, job["id"], owner, after, settings.sse_poll_s, settings.sse_keepalive_s)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    data, has_more = await run_in_threadpool(store.list_events, job["id"], after, limit)
    return {"data": [api_event(e) for e in data], "has_more": has_more}
