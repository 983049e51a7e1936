"""Compare jobs: POST /compare fans one grid out into child jobs; the rest reads, cancels, deletes
and downloads, with the same auth and owner isolation as jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..compare_store import CompareStore
from ..compares import advance
from ..deps import CompareStoreDep, Owner, QueueDep, SettingsDep, StorageDep
from ..errors import ApiError, log, responses
from ..schemas import ArtifactList, Compare, CompareList
from ..store import InvalidCursor, JobEnded, JobNotEnded, JobNotFound
from ..uploads import receive_body, upload_body
from ..validation import validate_compare
from .artifacts import FILE_CONTENT, serve_artifact

router = APIRouter(prefix="/compare", tags=["compare"])

_BODY = upload_body("CompareConfig", "compare config")


def _not_found(compare_id: str) -> ApiError:
    return ApiError(404, f"no compare job {compare_id!r}", "compare_not_found", "compare_id")


def _owned(compares: CompareStore, compare_id: str, owner: str) -> dict:
    compare = compares.get(compare_id, owner)
    if compare is None:  # another owner's compare is 404, exactly like a missing one
        raise _not_found(compare_id)
    return compare


def _owned_id(compare_id: str, owner: Owner, compares: CompareStoreDep) -> str:
    """The compare's id once it is the caller's (404 otherwise), without loading its children."""
    if not compares.owns(compare_id, owner):
        raise _not_found(compare_id)
    return compare_id


OwnedCompareId = Annotated[str, Depends(_owned_id)]


@router.post("", status_code=202, response_model=Compare, summary="Create a compare job",
             responses={202: {"headers": {"Location": {"description": "URL of the compare job",
                                                       "schema": {"type": "string"}}}},
                        **responses(400, 401, 413, 415, 422, 503)},
             openapi_extra={"requestBody": _BODY})
async def create_compare(request: Request, response: Response, owner: Owner, settings: SettingsDep,
                         compares: CompareStoreDep, storage: StorageDep, queue: QueueDep) -> dict:
    data, received = await receive_body(request, storage, settings)
    try:
        config, plans = validate_compare(data, settings, set(received.files) if received else set())
        children = [{"arm": p.arm, "kind": p.kind, "seed_index": p.seed_index, "config": p.config} for p in plans]
        compare = await run_in_threadpool(compares.create, owner, config, ["original", "relu"], children)
    except BaseException:
        if received:
            storage.discard(received.dir)
        raise
    if received:  # stored once, under the compare: every child reads them from there
        storage.adopt(compare["id"], received.dir)
    original = next(c for arm in compare["arms"] if arm["name"] == "original" for c in arm["children"])
    try:
        await run_in_threadpool(queue.send, original["id"])
    except Exception as err:
        log.warning("broker send failed for compare %s: %s", compare["id"], err)
        error = {"code": "broker_unavailable", "message": f"the compare job could not be queued: {err}"}
        await run_in_threadpool(compares.jobs.fail, original["id"], error)
        raise ApiError(503, f"the job queue is unavailable ({err})", "broker_unavailable") from None
    response.headers["Location"] = str(request.url_for("get_compare", compare_id=compare["id"]))
    return compare


@router.get("", response_model=CompareList, responses=responses(401, 422),
            summary="List your compare jobs, newest first")
def list_compares(
    owner: Owner,
    compares: CompareStoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, description="id of the last compare of the previous page")] = None,
) -> dict:
    try:
        data, has_more = compares.list(owner, limit=limit, after=after)
    except InvalidCursor as err:
        raise ApiError(422, str(err), "invalid_cursor", "after") from None
    return {"data": data, "has_more": has_more}


@router.get("/{compare_id}", response_model=Compare, responses=responses(401, 404),
            summary="Retrieve a compare job: arms, children, progress, leaderboard and winner")
def get_compare(compare_id: str, owner: Owner, compares: CompareStoreDep) -> dict:
    return _owned(compares, compare_id, owner)


@router.post("/{compare_id}/cancel", response_model=Compare, responses=responses(401, 404, 409),
             summary="Cancel every child that has not ended")
def cancel_compare(compare_id: str, owner: Owner, settings: SettingsDep, compares: CompareStoreDep,
                   storage: StorageDep, queue: QueueDep) -> dict:
    try:
        revoked = compares.request_cancel(compare_id, owner)
    except JobNotFound:
        raise _not_found(compare_id) from None
    except JobEnded as err:
        raise ApiError(409, str(err), "compare_ended", "compare_id") from None
    for job_id in revoked:
        try:
            queue.revoke(job_id)
        except Exception as err:
            log.warning("revoke of %s failed: %s", job_id, err)
    # Every child may have ended already (all were queued): the compare ends now, not at the next sweep.
    advance(compares, storage, queue, compare_id, settings.compare_alpha)
    return _owned(compares, compare_id, owner)


@router.delete("/{compare_id}", status_code=204, response_class=Response, responses=responses(401, 404, 409),
               summary="Delete an ended compare job, its children and their files")
def delete_compare(compare_id: str, owner: Owner, compares: CompareStoreDep, storage: StorageDep) -> Response:
    try:
        ids = compares.delete(compare_id, owner)
    except JobNotFound:
        raise _not_found(compare_id) from None
    except JobNotEnded as err:
        raise ApiError(409, str(err), "compare_not_ended", "compare_id") from None
    for record_id in ids:
        storage.delete_job(record_id)
    return Response(status_code=204)


@router.get("/{compare_id}/artifacts", response_model=ArtifactList, responses=responses(401, 404),
            summary="List a compare job's artifacts (leaderboard, the winner's model)")
def list_compare_artifacts(compare_id: OwnedCompareId, storage: StorageDep) -> dict:
    return {"data": storage.list_artifacts(compare_id)}


@router.get("/{compare_id}/artifacts/{name}", response_class=StreamingResponse,
            responses={200: {"content": FILE_CONTENT, "description": "the whole file"},
                       206: {"content": FILE_CONTENT, "description": "the requested range"},
                       **responses(401, 404, 416)},
            summary="Download a compare job's artifact (Range supported)")
def download_compare_artifact(
    compare_id: OwnedCompareId, name: str, storage: StorageDep,
    byte_range: Annotated[str | None, Header(alias="Range", description="bytes=first-last")] = None,
):
    return serve_artifact(storage, compare_id, name, byte_range)
