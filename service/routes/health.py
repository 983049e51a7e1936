"""Liveness (the process answers) and readiness (database, broker and storage all answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..errors import error_response, responses
from ..schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> dict:
    return {"status": "ok"}


async def _check(fn, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(fn), timeout_s)
        return "ok"
    except TimeoutError:
        return f"timed out after {timeout_s:g} s"
    except Exception as err:  # the probe reports any failure; it must not raise
        return f"{type(err).__name__}: {err}"[:300]


@router.get("/readyz", response_model=Ready, responses=responses(503), summary="Readiness")
async def readyz(request: Request):
    state = request.app.state
    timeout = state.settings.readiness_timeout_s
    names = ("database", "broker", "storage")
    results = await asyncio.gather(
        _check(state.store.ping, timeout),
        _check(lambda: state.queue.ping(timeout), timeout + 0.5),
        _check(state.storage.check, timeout),
    )
    checks = dict(zip(names, results, strict=True))
    failing = [f"{name}: {result}" for name, result in checks.items() if result != "ok"]
    if failing:
        return error_response(503, "not ready: " + "; ".join(failing), "not_ready")
    return {"status": "ok", "checks": checks}
