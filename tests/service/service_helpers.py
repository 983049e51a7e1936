"""Helpers of the service tests (the fixtures are in conftest.py): keys, configs, settings, raw
ASGI requests, multipart bodies.

Nothing here imports torch: the service must run without it (multiprocessing children that
import this module stay light).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("RELUSWAP_PG_BIN", "/usr/lib/postgresql/15/bin"))
ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def valid_config(**overrides) -> dict:
    cfg = {
        "model": {"arch": "torchvision:resnet18", "num_classes": 10},
        "dataset": {"uri": "builtin:digits", "image_size": 32},
        "activation": "pvlu",
        "train": {"epochs": 1},
    }
    cfg.update(overrides)
    return cfg


# ---- PostgreSQL ----------------------------------------------------------------------------------


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root: run the cluster as the postgres user when we are root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd




# ---- Redis ---------------------------------------------------------------------------------------


# ---- the API -------------------------------------------------------------------------------------


@dataclass
class Api:
    client: object
    app: object
    store: object
    storage: object
    queue: object
    settings: object
    tmp: Path

    def headers(self, key: str = ALICE, **extra) -> dict:
        return {"Authorization": f"Bearer {key}", **extra}

    def create(self, key: str = ALICE, config: dict | None = None, **kw) -> dict:
        r = self.client.post("/finetune", json=config or valid_config(), headers=self.headers(key), **kw)
        assert r.status_code == 202, r.text
        return r.json()

    def finish(self, job_id: str, status: str = "succeeded", **kw) -> None:
        assert self.store.claim(job_id, "test-worker", 60) is not None
        assert self.store.finish(job_id, "test-worker", status, **kw)


def make_settings(tmp_path: Path, **overrides):
    from service.settings import Settings

    (tmp_path / "data").mkdir(exist_ok=True)
    values = dict(data_dir=tmp_path, api_keys=[f"alice:{ALICE}", f"bob:{BOB}"],
                  allowed_data_roots=[tmp_path / "data"], sse_poll_s=0.02)
    values.update(overrides)
    return Settings(**values)


# ---- raw ASGI, to see how much of a request body the app pulls ----------------------------------


@dataclass
class AsgiResult:
    status: int
    headers: dict
    body: bytes
    pulled: int  # body bytes the app asked for


def asgi_request(app, method: str, path: str, headers: dict, chunks: Iterable[bytes]) -> AsgiResult:
    """Call the ASGI app directly, handing it the body one chunk per receive()."""

    async def go() -> AsgiResult:
        it = iter(chunks)
        pulled = 0
        sent: list[dict] = []

        async def receive():
            nonlocal pulled
            chunk = next(it, None)
            if chunk is None:
                return {"type": "http.request", "body": b"", "more_body": False}
            pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), str(v).encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {},
        }
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
        return AsgiResult(start["status"], hdrs, body, pulled)

    return asyncio.run(go())


def multipart_body(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """[(name, filename or None, data)] -> a multipart/form-data body."""
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"Content-Disposition: {disp}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


# ---- claim race across processes (spawned children import only this module) ---------------------


def claim_all(url: str, job_ids: list[str], worker: str, barrier, out) -> None:
    from service.store import JobStore

    store = JobStore(url, create_tables=False)
    store.ping()  # connect before the start line so connection setup does not decide the race
    barrier.wait()
    won = [job_id for job_id in job_ids if store.claim(job_id, worker, 60) is not None]
    store.close()
    out.put((worker, won))
