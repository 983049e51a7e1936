"""POST /finetune: validate, record, store the uploads, then hand the job to the workers."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from ..deps import Owner, QueueDep, SettingsDep, StorageDep, StoreDep
from ..errors import ApiError, log, responses
from ..schemas import Job
from ..store import IdempotencyConflict
from ..uploads import Received, receive_body, upload_body
from ..validation import validate_job

router = APIRouter(tags=["jobs"])

_BODY = upload_body("JobConfig", "job config")


def _request_hash(config: dict, received: Received | None) -> str:
    files = {name: f.sha256 for name, f in received.files.items()} if received else {}
    canonical = json.dumps({"config": config, "files": files}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "/finetune",
    status_code=202,
    response_model=Job,
    summary="Create a fine-tuning job",
    responses={
        202: {"headers": {"Location": {"description": "URL of the job", "schema": {"type": "string"}}}},
        **responses(400, 401, 409, 413, 415, 422, 503),
    },
    openapi_extra={"requestBody": _BODY},
)
async def create_job(
    request: Request,
    response: Response,
    owner: Owner,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
    queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(max_length=255,
                                                  description="same key and body within 24 h: same job")] = None,
) -> dict:
    data, received = await receive_body(request, storage, settings)
    try:
        config = validate_job(data, settings, set(received.files) if received else set())
        job, created = await run_in_threadpool(store.create_job, owner, config, idempotency_key or None,
                                               _request_hash(config, received))
    except BaseException as err:
        if received:
            storage.discard(received.dir)
        if isinstance(err, IdempotencyConflict):
            raise ApiError(409, str(err), "idempotency_conflict", "Idempotency-Key") from None
        raise
    if received:
        # Files move under the job before the task is sent, so a worker always finds them.
        if created:
            storage.adopt(job["id"], received.dir)
        else:
            storage.discard(received.dir)
    if created:
        try:
            await run_in_threadpool(queue.send, job["id"])
        except Exception as err:
            log.warning("broker send failed for %s: %s", job["id"], err)
            error = {"code": "broker_unavailable", "message": f"the job could not be queued: {err}"}
            await run_in_threadpool(store.fail, job["id"], error)
            raise ApiError(503, f"the job queue is unavailable ({err}): job {job['id']} was marked failed",
                           "broker_unavailable",
                           headers={"Location": str(request.url_for("get_job", job_id=job["id"]))}) from None
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(request.url_for("get_job", job_id=job["id"]))
    return job
