"""JobStore: job records and events, the single source of truth for the API and the workers.

The broker only carries "run job <id>"; liveness lives here (service-infra.md): a worker claims a
job with one atomic UPDATE, heartbeats while it runs, and a reaper requeues or fails jobs whose
heartbeat stopped. Every state change is a single conditional UPDATE, so two processes can race on
any of them and exactly one wins, on SQLite and PostgreSQL alike. Times come from this process's
clock (UTC), so both backends behave the same.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from .contract import ACTIVE_STATUSES, ENDED_STATUSES, JOB_STATUSES
from .db import init_db, make_engine
from .tables import UTCDateTime, job_events, jobs

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class JobNotFound(LookupError):
    pass


class JobEnded(Exception):
    """The job has already ended (cancel of an ended job)."""


class JobNotEnded(Exception):
    """The job has not ended yet (delete of a live job)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used for a different request body."""


class InvalidCursor(ValueError):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def rfc3339(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def _job(row) -> dict[str, Any]:
    # The job object of docs/api.md, plus worker/heartbeat/cancel fields the API's response model drops.
    return {
        "id": row.id,
        "status": row.status,
        "created_at": rfc3339(row.created_at),
        "started_at": rfc3339(row.started_at),
        "finished_at": rfc3339(row.finished_at),
        "config": row.config,
        "progress": row.progress,
        "metrics": row.metrics,
        "error": row.error,
        "attempts": row.attempts,
        "artifacts": row.artifacts or [],
        "worker": row.worker,
        "heartbeat_at": rfc3339(row.heartbeat_at),
        "cancel_requested": bool(row.cancel_requested),
        "compare_id": row.compare_id,
        "arm": row.arm,
        "child_kind": row.child_kind,
        "seed_index": row.seed_index,
    }


def _event(row) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "created_at": rfc3339(row.created_at),
        "type": row.type,
        "level": row.level,
        "message": row.message,
        "data": row.data,
    }


def _ts(value: datetime):
    return literal(value, UTCDateTime())


def newest_first_page(c, table, q, owner: str, limit: int, after: str | None, what: str) -> list:
    """limit + 1 rows of q, newest first (created_at, then id); `after` is the id of the last row of
    the previous page, which must be one of the owner's (else InvalidCursor)."""
    if after is not None:
        cur = c.execute(select(table.c.created_at, table.c.id)
                        .where(table.c.id == after, table.c.owner == owner)).first()
        if cur is None:
            raise InvalidCursor(f"unknown cursor {after!r}: pass the id of a {what} from the previous page")
        q = q.where(or_(table.c.created_at < _ts(cur.created_at),
                        and_(table.c.created_at == _ts(cur.created_at), table.c.id < cur.id)))
    return c.execute(q.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)).all()


class JobStore:
    def __init__(self, url: str | Engine, create_tables: bool = True):
        self.engine = make_engine(url) if isinstance(url, str) else url
        if create_tables:
            init_db(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(select(1))

    # ---- API side -------------------------------------------------------------------------------

    def create_job(self, owner: str, config: dict, idempotency_key: str | None = None,
                   request_hash: str | None = None) -> tuple[dict, bool]:
        """Insert a queued job; (job, created). A repeated key with the same hash within 24 h
        returns the existing job (created False); with another hash, IdempotencyConflict."""
        if idempotency_key:
            found = self._replay(owner, idempotency_key, request_hash)
            if found:
                return found, False
        job_id, now = new_job_id(), _now()
        try:
            with self.engine.begin() as c:
                c.execute(insert(jobs).values(
                    id=job_id, owner=owner, status="queued", config=config, attempts=0,
                    cancel_requested=False, idempotency_key=idempotency_key or None,
                    request_hash=request_hash, created_at=now, artifacts=[],
                ))
                self._add_event(c, job_id, "status", "job queued", data={"status": "queued"}, now=now)
        except IntegrityError:
            # A concurrent request with the same key won the insert: answer with its job.
            found = self._replay(owner, idempotency_key, request_hash) if idempotency_key else None
            if found:
                return found, False
            raise
        return self.get_job(job_id), True

    def _replay(self, owner: str, key: str, request_hash: str | None) -> dict | None:
        with self.engine.begin() as c:
            # Release the key of a job older than the window so the key can be used again.
            c.execute(update(jobs)
                      .where(jobs.c.owner == owner, jobs.c.idempotency_key == key,
                             jobs.c.created_at < _ts(_now() - IDEMPOTENCY_WINDOW))
                      .values(idempotency_key=None))
            row = c.execute(select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used with a different request")
        return _job(row)

    def get_job(self, job_id: str, owner: str | None = None) -> dict | None:
        q = select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            q = q.where(jobs.c.owner == owner)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return None if row is None else _job(row)

    def list_jobs(self, owner: str, limit: int = 20, after: str | None = None,
                  status: str | None = None, compare_id: str | None = None) -> tuple[list[dict], bool]:
        """Newest first; `after` is the id of the last job of the previous page."""
        q = select(jobs).where(jobs.c.owner == owner)
        if status is not None:
            q = q.where(jobs.c.status == status)
        if compare_id is not None:
            q = q.where(jobs.c.compare_id == compare_id)
        with self.engine.connect() as c:
            rows = newest_first_page(c, jobs, q, owner, limit, after, "job")
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    def request_cancel(self, job_id: str, owner: str) -> dict:
        """queued -> cancelled at once (it will never run); running -> cancelling (the worker stops
        at its next check); cancelling stays; an ended job raises JobEnded."""
        now = _now()
        mine = and_(jobs.c.id == job_id, jobs.c.owner == owner)
        with self.engine.begin() as c:
            if c.execute(update(jobs).where(mine, jobs.c.status == "queued").values(
                    status="cancelled", cancel_requested=True, finished_at=now)).rowcount:
                self._add_event(c, job_id, "status", "job cancelled before it started",
                                data={"status": "cancelled"}, now=now)
            elif c.execute(update(jobs).where(mine, jobs.c.status == "running").values(
                    status="cancelling", cancel_requested=True)).rowcount:
                self._add_event(c, job_id, "status", "cancellation requested",
                                data={"status": "cancelling"}, now=now)
            else:
                row = c.execute(select(jobs.c.status).where(mine)).first()
                if row is None:
                    raise JobNotFound(job_id)
                if row.status in ENDED_STATUSES:
                    raise JobEnded(f"job {job_id} has already ended ({row.status})")
        return self.get_job(job_id, owner)

    def delete_job(self, job_id: str, owner: str) -> None:
        """Delete an ended job and its events (the caller deletes its files)."""
        with self.engine.begin() as c:
            gone = c.execute(delete(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner,
                                                jobs.c.status.in_(ENDED_STATUSES))).rowcount
            if not gone:
                row = c.execute(select(jobs.c.status).where(jobs.c.id == job_id, jobs.c.owner == owner)).first()
                if row is None:
                    raise JobNotFound(job_id)
                raise JobNotEnded(f"job {job_id} is {row.status}: cancel it and wait until it has ended")
            c.execute(delete(job_events).where(job_events.c.job_id == job_id))

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as c:
            rows = c.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts.update({status: n for status, n in rows})
        return counts

    # ---- events ---------------------------------------------------------------------------------

    def add_event(self, job_id: str, type: str, message: str = "", level: str = "info",
                  data: dict | None = None) -> int:
        with self.engine.begin() as c:
            return self._add_event(c, job_id, type, message, level, data)

    @staticmethod
    def _add_event(c, job_id, type, message="", level="info", data=None, now=None) -> int:
        res = c.execute(insert(job_events).values(job_id=job_id, created_at=now or _now(), type=type,
                                                  level=level, message=message, data=data))
        return int(res.inserted_primary_key[0])

    def list_events(self, job_id: str, after: int | None = None, limit: int = 100) -> tuple[list[dict], bool]:
        """Oldest first; `after` is the id of the last event already seen."""
        q = select(job_events).where(job_events.c.job_id == job_id)
        if after is not None:
            q = q.where(job_events.c.id > int(after))
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(job_events.c.id).limit(limit + 1)).all()
        return [_event(r) for r in rows[:limit]], len(rows) > limit

    # ---- worker side ----------------------------------------------------------------------------

    def _stale(self, stale_after_s: float):
        cutoff = _ts(_now() - timedelta(seconds=stale_after_s))
        return and_(jobs.c.status.in_(ACTIVE_STATUSES), or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < cutoff))

    def claim(self, job_id: str, worker_id: str, stale_after_s: float) -> dict | None:
        """Take the job for this worker, atomically: a queued job, or a running/cancelling one whose
        holder stopped heartbeating for stale_after_s. None when another live worker holds it, or it
        was cancelled, ended or deleted. A reclaimed cancelling job stays cancelling."""
        now = _now()
        with self.engine.begin() as c:
            won = c.execute(
                update(jobs)
                .where(jobs.c.id == job_id, or_(jobs.c.status == "queued", self._stale(stale_after_s)))
                .values(
                    status=case((jobs.c.cancel_requested, "cancelling"), else_="running"),
                    worker=worker_id,
                    attempts=jobs.c.attempts + 1,
                    started_at=func.coalesce(jobs.c.started_at, _ts(now)),
                    heartbeat_at=now,
                )
            ).rowcount
            if not won:
                return None
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).first()
            self._add_event(c, job_id, "status", f"attempt {row.attempts} started on {worker_id}",
                            data={"status": row.status, "attempt": row.attempts, "worker": worker_id}, now=now)
        return _job(row)

    def _held(self, job_id: str, worker_id: str):
        return and_(jobs.c.id == job_id, jobs.c.worker == worker_id, jobs.c.status.in_(ACTIVE_STATUSES))

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """False when this worker no longer holds the job (reclaimed, requeued, failed, deleted)."""
        with self.engine.begin() as c:
            return bool(c.execute(update(jobs).where(self._held(job_id, worker_id))
                                  .values(heartbeat_at=_now())).rowcount)

    def update_progress(self, job_id: str, worker_id: str, progress: dict) -> bool:
        """Replace the progress object and heartbeat; False when the claim is lost."""
        with self.engine.begin() as c:
            return bool(c.execute(update(jobs).where(self._held(job_id, worker_id))
                                  .values(progress=progress, heartbeat_at=_now())).rowcount)

    def finish(self, job_id: str, worker_id: str, status: str, metrics: dict | None = None,
               error: dict | None = None, artifacts: list | None = None) -> bool:
        """End a job this worker holds (succeeded, failed or cancelled); False when the claim is lost."""
        if status not in ENDED_STATUSES:
            raise ValueError(f"finish status must be one of {', '.join(ENDED_STATUSES)}; got {status!r}")
        now = _now()
        values: dict[str, Any] = {"status": status, "finished_at": now, "heartbeat_at": now}
        for name, value in (("metrics", metrics), ("error", error), ("artifacts", artifacts)):
            if value is not None:
                values[name] = value
        with self.engine.begin() as c:
            if not c.execute(update(jobs).where(self._held(job_id, worker_id)).values(**values)).rowcount:
                return False
            level = "error" if status == "failed" else "info"
            message = f"job {status}" + (f": {error.get('message', '')}" if error else "")
            self._add_event(c, job_id, "status", message, level, {"status": status}, now=now)
        return True

    def is_cancel_requested(self, job_id: str) -> bool:
        """True also when the job is gone: a worker should stop either way."""
        with self.engine.connect() as c:
            row = c.execute(select(jobs.c.cancel_requested, jobs.c.status).where(jobs.c.id == job_id)).first()
        return row is None or bool(row.cancel_requested) or row.status in ("cancelling", "cancelled")

    def stale_jobs(self, older_than_s: float) -> list[dict]:
        """Running/cancelling jobs whose heartbeat is older than older_than_s (for the reaper)."""
        with self.engine.connect() as c:
            rows = c.execute(select(jobs).where(self._stale(older_than_s)).order_by(jobs.c.created_at)).all()
        return [_job(r) for r in rows]

    def requeue(self, job_id: str, stale_after_s: float | None = None) -> bool:
        """Back to queued with the worker cleared (a cancelling job ends as cancelled instead).
        With stale_after_s, only if the heartbeat is still that old: a worker that came back or a
        new claimant keeps the job. The caller re-sends the task."""
        now = _now()
        cond = self._stale(stale_after_s) if stale_after_s is not None else jobs.c.status.in_(ACTIVE_STATUSES)
        with self.engine.begin() as c:
            if not c.execute(update(jobs).where(jobs.c.id == job_id, cond).values(
                    status=case((jobs.c.cancel_requested, "cancelled"), else_="queued"),
                    finished_at=case((jobs.c.cancel_requested, _ts(now)), else_=None),
                    worker=None, heartbeat_at=None)).rowcount:
                return False
            status = c.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()
            self._add_event(c, job_id, "status", f"worker lost: job {status}", "warning",
                            {"status": status}, now=now)
        return True

    def fail(self, job_id: str, error: dict, stale_after_s: float | None = None) -> bool:
        """Mark a job that has not ended as failed (reaper: attempts exhausted; API: broker down)."""
        now = _now()
        cond = self._stale(stale_after_s) if stale_after_s is not None else jobs.c.status.notin_(ENDED_STATUSES)
        with self.engine.begin() as c:
            if not c.execute(update(jobs).where(jobs.c.id == job_id, cond).values(
                    status="failed", error=error, finished_at=now, heartbeat_at=None)).rowcount:
                return False
            self._add_event(c, job_id, "status", f"job failed: {error.get('message', '')}", "error",
                            {"status": "failed"}, now=now)
        return True
