"""Request bodies of POST /finetune, streamed: files go to disk chunk by chunk as they arrive.

UploadFile-as-bytes would hold a 2 GiB upload in memory; python-multipart's streaming parser keeps
about one chunk (service-infra.md). The size limit is enforced twice: a declared Content-Length
over the limit is refused before reading anything, and a body that grows past it (chunked, or a
lying Content-Length) is cut off mid-stream with its partial files deleted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .errors import ApiError
from .storage import Storage

# Parts a multipart POST /finetune may carry, with the file types each accepts.
FILE_PARTS = {
    "weights": (".safetensors", ".pt", ".pth"),
    "dataset": (".zip", ".tar.gz", ".tgz"),
}


def file_suffix(part: str, filename: str) -> str:
    """The accepted suffix `filename` ends with (lower case), or a 422 naming the part."""
    lower = filename.lower()
    for suffix in FILE_PARTS[part]:
        if lower.endswith(suffix):
            return suffix
    raise ApiError(422, f"{part}: file {filename!r} must end with one of {', '.join(FILE_PARTS[part])}",
                   "invalid_file", part)


PARTS = ("config", *FILE_PARTS)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds the limit of {limit} bytes", "payload_too_large")


def check_declared_length(request: Request, limit: int) -> None:
    """413 at once, before reading a byte, when Content-Length already says too much."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header", "bad_request") from None
        if size > limit:
            raise too_large(limit)


async def read_json(request: Request, limit: int) -> Any:
    check_declared_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}", "invalid_json") from None


@dataclass
class UploadedFile:
    path: Path
    filename: str
    size: int = 0
    sha256: str = ""


@dataclass
class Received:
    dir: Path
    config: Any = None
    files: dict[str, UploadedFile] = field(default_factory=dict)


class _Receiver:
    """python-multipart callbacks: route each part to the config buffer or a file on disk."""

    def __init__(self, incoming: Path, max_config_bytes: int):
        self.incoming, self.max_config_bytes = incoming, max_config_bytes
        self.files: dict[str, UploadedFile] = {}
        self.config: bytearray | None = None
        self.seen: set[str] = set()
        self.pending: list[tuple[BinaryIO, bytes]] = []  # written in a thread after each chunk
        self.open: list[BinaryIO] = []
        self._hashes: dict[str, Any] = {}
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._part: str | None = None
        self._file: BinaryIO | None = None

    def on_part_begin(self) -> None:
        self._headers, self._part, self._file = {}, None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name not in PARTS:
            raise ApiError(422, f"unknown part {name!r}; accepted parts: {', '.join(PARTS)}",
                           "invalid_multipart", name or None)
        if name in self.seen:
            raise ApiError(422, f"part {name!r} was sent twice", "invalid_multipart", name)
        self.seen.add(name)
        self._part = name
        if name == "config":
            self.config = bytearray()
            return
        filename = opts.get(b"filename", b"").decode("utf-8", "replace")
        if not filename:
            raise ApiError(422, f"part {name!r} must be a file (with a filename)", "invalid_multipart", name)
        path = self.incoming / f"{name}{file_suffix(name, filename)}"  # our name, never the client's
        self._file = path.open("wb")
        self.open.append(self._file)
        self.files[name] = UploadedFile(path, filename)
        self._hashes[name] = hashlib.sha256()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = bytes(data[start:end])
        if self._part == "config":
            self.config += piece
            if len(self.config) > self.max_config_bytes:
                raise ApiError(413, f"config part exceeds {self.max_config_bytes} bytes", "payload_too_large",
                               "config")
        elif self._file is not None:
            self.pending.append((self._file, piece))
            self._hashes[self._part].update(piece)
            self.files[self._part].size += len(piece)

    def on_part_end(self) -> None:
        if self._part in self._hashes:
            self.files[self._part].sha256 = self._hashes[self._part].hexdigest()

    def flush(self) -> None:
        for f, piece in self.pending:
            f.write(piece)
        self.pending.clear()

    def close(self) -> None:
        for f in self.open:
            f.close()


async def receive_multipart(request: Request, storage: Storage, max_bytes: int, max_config_bytes: int) -> Received:
    """Stream a multipart body into a fresh incoming directory; on any failure it is deleted."""
    check_declared_length(request, max_bytes)
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data needs a boundary", "invalid_multipart")
    incoming = storage.new_incoming()
    rx = _Receiver(incoming, max_config_bytes)
    try:
        parser = MultipartParser(boundary, {
            "on_part_begin": rx.on_part_begin, "on_header_field": rx.on_header_field,
            "on_header_value": rx.on_header_value, "on_header_end": rx.on_header_end,
            "on_headers_finished": rx.on_headers_finished, "on_part_data": rx.on_part_data,
            "on_part_end": rx.on_part_end,
        })
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise too_large(max_bytes)  # stop reading: the rest of the body is never pulled
            parser.write(chunk)
            if rx.pending:
                await run_in_threadpool(rx.flush)
        parser.finalize()
        await run_in_threadpool(rx.flush)
    except FormParserError as err:
        rx.close()
        storage.discard(incoming)
        raise ApiError(400, f"malformed multipart body: {err}", "invalid_multipart") from None
    except BaseException:
        rx.close()
        storage.discard(incoming)
        raise
    rx.close()
    if rx.config is None:
        storage.discard(incoming)
        raise ApiError(422, "multipart request needs a 'config' part (the job config as JSON)",
                       "invalid_multipart", "config")
    try:
        config = json.loads(rx.config)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        storage.discard(incoming)
        raise ApiError(422, f"config part is not valid JSON: {err}", "invalid_config", "config") from None
    return Received(incoming, config, rx.files)


async def receive_body(request: Request, storage: Storage, settings) -> tuple[Any, Received | None]:
    """A JSON body, or a multipart one (its files streamed to an incoming folder): (config, received)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        return await read_json(request, settings.max_config_bytes), None
    if media == "multipart/form-data":
        received = await receive_multipart(request, storage, settings.max_upload_bytes, settings.max_config_bytes)
        return received.config, received
    raise ApiError(415, "send application/json, or multipart/form-data with a config part and files",
                   "unsupported_media_type")


def upload_body(schema: str, what: str) -> dict:
    """The OpenAPI requestBody of a route that takes a config as JSON or multipart with files."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["config"],
                    "properties": {
                        "config": {"type": "string", "description": f"the {what} ({schema}) as JSON"},
                        "weights": {"type": "string", "format": "binary",
                                    "description": "state_dict: .safetensors, .pt or .pth"},
                        "dataset": {"type": "string", "format": "binary",
                                    "description": "ImageFolder archive: .zip, .tar.gz or .tgz"},
                    },
                }
            },
        },
    }
