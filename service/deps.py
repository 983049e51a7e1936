"""Typed dependencies: the app's services (from app.state) and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from .auth import KeyRing
from .compare_store import CompareStore
from .errors import ApiError
from .queue import JobQueue
from .settings import Settings
from .storage import LocalStorage
from .store import JobStore

_bearer = HTTPBearer(auto_error=False, description="API key: Authorization: Bearer <key>")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _storage(request: Request) -> LocalStorage:
    return request.app.state.storage


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def _compares(request: Request) -> CompareStore:
    return request.app.state.compares


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StorageDep = Annotated[LocalStorage, Depends(_storage)]
QueueDep = Annotated[JobQueue, Depends(_queue)]
CompareStoreDep = Annotated[CompareStore, Depends(_compares)]


def _owner(request: Request,
           creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    keys: KeyRing = request.app.state.keys
    owner = keys.owner(creds.credentials if creds else None)
    if owner is None:
        message = "invalid API key" if creds else "missing API key: send Authorization: Bearer <key>"
        raise ApiError(401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return owner


Owner = Annotated[str, Depends(_owner)]


async def _owned_job(job_id: str, owner: Owner, store: StoreDep) -> dict:
    # Another owner's job is 404, exactly like a missing one: its existence is not revealed.
    job = await run_in_threadpool(store.get_job, job_id, owner)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", "job_not_found", "job_id")
    return job


OwnedJob = Annotated[dict, Depends(_owned_job)]


_KNOWN = "_reluswap_query_names"  # cached on the route object itself (routes are not hashable)


def _query_names(dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """Unknown query parameters are a 422, as unknown config fields are: a typo (?limt=5) must not
    be silently ignored."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = getattr(route, _KNOWN, None)
    if known is None:
        known = frozenset(_query_names(route.dependant))
        setattr(route, _KNOWN, known)
    names = [name for name, _ in request.query_params.multi_items()]
    for name in names:
        if names.count(name) > 1:  # every parameter takes one value: ?status=a&status=b is ambiguous
            raise ApiError(422, f"query parameter {name!r} given {names.count(name)} times; give it once",
                           "invalid_request", name or None)
        if name not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise ApiError(422, f"unknown query parameter {name!r}; accepted: {accepted}", "invalid_request",
                           name or None)
