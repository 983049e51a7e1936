"""Artifacts of a job: the list, and downloads with single-range support (206/416)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from ..deps import OwnedJob, StorageDep
from ..errors import ApiError, responses
from ..schemas import ArtifactList
from ..storage import CONTENT_TYPES, LocalStorage, StorageError, content_type

router = APIRouter(prefix="/jobs/{job_id}/artifacts", tags=["artifacts"])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive, or None to send the whole file. A syntactically bad or multi-range
    header is ignored (RFC 9110 allows it); an unsatisfiable one is 416."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m[1] and not m[2]):
        return None
    if m[1]:
        first = int(m[1])
        last = min(int(m[2]), size - 1) if m[2] else size - 1
        if m[2] and int(m[2]) < first:
            return None  # invalid: ignore
    else:  # bytes=-N: the last N bytes
        first, last = max(size - int(m[2]), 0), size - 1
        if int(m[2]) == 0:
            first = size  # unsatisfiable
    if first >= size:
        raise ApiError(416, f"range {header!r} is outside the file ({size} bytes)", "range_not_satisfiable",
                       "Range", headers={"Content-Range": f"bytes */{size}"})
    return first, last


def _reader(f, first: int, length: int):
    with f:
        f.seek(first)
        while length > 0:
            chunk = f.read(min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk


@router.get("", response_model=ArtifactList, responses=responses(401, 404), summary="List artifacts")
def list_artifacts(job: OwnedJob, storage: StorageDep) -> dict:
    return {"data": storage.list_artifacts(job["id"])}


# Each artifact is served with its own type (the listing's content_type), a range too.
# A JSON artifact is any JSON document (a whole report.json parses as one); the rest are bytes.
FILE_CONTENT = {media: {"schema": {} if media == "application/json" else {"type": "string", "format": "binary"}}
                for media in CONTENT_TYPES}


@router.get("/{name}", response_class=StreamingResponse,
            responses={200: {"content": FILE_CONTENT, "description": "the whole file"},
                       206: {"content": FILE_CONTENT, "description": "the requested range"},
                       **responses(401, 404, 416)},
            summary="Download an artifact (Range supported)")
def download_artifact(job: OwnedJob, name: str, storage: StorageDep,
                      byte_range: Annotated[str | None, Header(alias="Range", description="bytes=first-last")] = None):
    return serve_artifact(storage, job["id"], name, byte_range)


def serve_artifact(storage: LocalStorage, record_id: str, name: str, byte_range: str | None) -> StreamingResponse:
    """A job's or a compare job's file, whole or one range, with its own content type. Sent as an
    attachment in a sandbox: an HTML report is never rendered with the API's origin."""
    try:
        f, size = storage.open_artifact(record_id, name)
    except (FileNotFoundError, StorageError):
        raise ApiError(404, f"no artifact {name!r}", "artifact_not_found", "name") from None
    try:
        span = parse_range(byte_range, size)
    except ApiError:
        f.close()
        raise
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{name}"',
               "Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    first, last, status = 0, size - 1, 200
    if span is not None:
        (first, last), status = span, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(_reader(f, first, last - first + 1), status_code=status,
                             media_type=content_type(name), headers=headers)
