"""Compare jobs in the database: the compare record and its children (ordinary jobs with a
compare_id, an arm and a seed index), created together in one transaction.

A compare's stored status changes only when it ends (succeeded, failed, cancelled); until then
its status is derived from its children on every read: queued until a child starts, running
after, cancelling once a cancel was asked.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update

from .contract import ENDED_STATUSES
from .store import JobEnded, JobNotEnded, JobNotFound, JobStore, _job, _ts, newest_first_page, rfc3339
from .tables import compares, job_events, jobs

# A leaderboard takes seconds; a claim this old belongs to a process that died while writing it.
FINISH_CLAIM_S = 300.0


def new_compare_id() -> str:
    return "cmp_" + uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


def _status(row, children: list[dict]) -> str:
    if row.status in ENDED_STATUSES:
        return row.status
    if row.cancel_requested:
        return "cancelling"
    return "running" if any(c["started_at"] for c in children) else "queued"


def _compare(row, children: list[dict]) -> dict[str, Any]:
    ended = sum(c["status"] in ENDED_STATUSES for c in children)
    arms: dict[str, dict] = {name: None for name in row.arms or []}  # the plan's order: controls first
    for child in children:
        arm = arms.get(child["arm"]) or {"name": child["arm"], "control": child["arm"] in row.controls,
                                         "children": []}
        arms[child["arm"]] = arm
        arm["children"].append({"id": child["id"], "seed_index": child["seed_index"], "status": child["status"],
                                "error": child["error"]})
    result = row.result or {}
    return {
        "id": row.id,
        "status": _status(row, children),
        "created_at": rfc3339(row.created_at),
        "finished_at": rfc3339(row.finished_at),
        "config": row.config,
        "progress": {"children": len(children), "ended": ended,
                     "fraction": ended / len(children) if children else 0.0},
        "arms": [arm for arm in arms.values() if arm is not None],
        "winner": result.get("winner"),
        "leaderboard": result.get("leaderboard"),
        "error": row.error,
        "artifacts": row.artifacts or [],
    }


class CompareStore:
    """Compare records over the JobStore's engine (the same database, the same transactions)."""

    def __init__(self, jobs_store: JobStore):
        self.jobs = jobs_store
        self.engine = jobs_store.engine

    # ---- API side -------------------------------------------------------------------------------

    def create(self, owner: str, config: dict, controls: list[str], children: list[dict]) -> dict:
        """Insert the compare and its children (each {arm, kind, seed_index, config}, in the plan's
        order), all queued."""
        compare_id, now = new_compare_id(), _now()
        arm_order = list(dict.fromkeys(child["arm"] for child in children))
        with self.engine.begin() as c:
            c.execute(insert(compares).values(id=compare_id, owner=owner, status="queued", config=config,
                                              controls=controls, arms=arm_order, dispatched=False,
                                              cancel_requested=False, created_at=now, artifacts=[]))
            for child in children:
                job_id = "job_" + uuid.uuid4().hex
                c.execute(insert(jobs).values(
                    id=job_id, owner=owner, status="queued", config=child["config"], attempts=0,
                    cancel_requested=False, created_at=now, artifacts=[], compare_id=compare_id,
                    arm=child["arm"], child_kind=child["kind"], seed_index=child["seed_index"]))
                self.jobs._add_event(c, job_id, "status", f"job queued (compare {compare_id}, arm {child['arm']})",
                                     data={"status": "queued", "compare_id": compare_id}, now=now)
        return self.get(compare_id)

    def children(self, compare_id: str) -> list[dict]:
        """The original first, then every arm in the plan's order, each in seed order."""
        with self.engine.connect() as c:
            order = c.execute(select(compares.c.arms).where(compares.c.id == compare_id)).scalar() or []
            rows = c.execute(select(jobs).where(jobs.c.compare_id == compare_id)).all()
        position = {arm: i for i, arm in enumerate(order)}
        rows = sorted(rows, key=lambda r: (r.seed_index is not None, position.get(r.arm, len(position)), r.arm,
                                           r.seed_index or 0))
        return [_job(r) for r in rows]

    def owns(self, compare_id: str, owner: str) -> bool:
        return self._row(compare_id, owner) is not None

    def original(self, compare_id: str) -> dict:
        """The child that measures the unconverted model once for every other child."""
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where(jobs.c.compare_id == compare_id,
                                               jobs.c.child_kind == "original")).first()
        if row is None:
            raise JobNotFound(f"compare {compare_id} has no original child")
        return _job(row)

    def get(self, compare_id: str, owner: str | None = None) -> dict | None:
        return self.state(compare_id, owner)[0]

    def state(self, compare_id: str, owner: str | None = None) -> tuple[dict | None, list[dict]]:
        """The compare object and its children (job dicts), from one read of each."""
        row = self._row(compare_id, owner)
        if row is None:
            return None, []
        children = self.children(compare_id)
        return _compare(row, children), children

    def _row(self, compare_id: str, owner: str | None = None):
        q = select(compares).where(compares.c.id == compare_id)
        if owner is not None:
            q = q.where(compares.c.owner == owner)
        with self.engine.connect() as c:
            return c.execute(q).first()

    def list(self, owner: str, limit: int = 20, after: str | None = None) -> tuple[list[dict], bool]:
        """Newest first; `after` is the id of the last compare of the previous page."""
        q = select(compares).where(compares.c.owner == owner)
        with self.engine.connect() as c:
            rows = newest_first_page(c, compares, q, owner, limit, after, "compare job")
        return [_compare(r, self.children(r.id)) for r in rows[:limit]], len(rows) > limit

    def request_cancel(self, compare_id: str, owner: str) -> list[str]:
        """Ask every child that has not ended to stop; the ids of those that were queued (now
        cancelled: the caller revokes their messages). An ended compare raises JobEnded."""
        row = self._row(compare_id, owner)
        if row is None:
            raise JobNotFound(compare_id)
        if row.status in ENDED_STATUSES:
            raise JobEnded(f"compare job {compare_id} has already ended ({row.status})")
        with self.engine.begin() as c:
            c.execute(update(compares).where(compares.c.id == compare_id).values(cancel_requested=True))
        revoked = []
        for child in self.children(compare_id):
            if child["status"] in ENDED_STATUSES:
                continue
            try:
                if self.jobs.request_cancel(child["id"], owner)["status"] == "cancelled":
                    revoked.append(child["id"])
            except JobEnded:  # it ended meanwhile
                continue
        return revoked

    def delete(self, compare_id: str, owner: str) -> list[str]:
        """Delete an ended compare, its children and their events; the ids whose files to delete."""
        with self.engine.begin() as c:
            row = c.execute(select(compares.c.status).where(compares.c.id == compare_id,
                                                            compares.c.owner == owner)).first()
            if row is None:
                raise JobNotFound(compare_id)
            if row.status not in ENDED_STATUSES:
                raise JobNotEnded(f"compare job {compare_id} is {row.status}: cancel it and wait until it has "
                                  "ended")
            ids = list(c.execute(select(jobs.c.id).where(jobs.c.compare_id == compare_id)).scalars())
            c.execute(delete(job_events).where(job_events.c.job_id.in_(ids)))
            c.execute(delete(jobs).where(jobs.c.compare_id == compare_id))
            c.execute(delete(compares).where(compares.c.id == compare_id))
        return [compare_id, *ids]

    # ---- coordination (workers and the reaper) --------------------------------------------------

    def claim_dispatch(self, compare_id: str) -> bool:
        """True for exactly one caller: it sends the training children to the queue."""
        with self.engine.begin() as c:
            return bool(c.execute(update(compares).where(compares.c.id == compare_id,
                                                         compares.c.dispatched.is_(False))
                                  .values(dispatched=True)).rowcount)

    def owner_of(self, compare_id: str) -> str:
        return self._row(compare_id).owner

    def release_dispatch(self, compare_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(compares).where(compares.c.id == compare_id).values(dispatched=False))

    def claim_finish(self, compare_id: str, stale_after_s: float = FINISH_CLAIM_S) -> bool:
        """True for the one caller that writes the leaderboard; a claim older than stale_after_s
        (its process died) can be taken again."""
        now = _now()
        cutoff = now - timedelta(seconds=stale_after_s)
        with self.engine.begin() as c:
            return bool(c.execute(update(compares).where(
                compares.c.id == compare_id, compares.c.status.notin_(ENDED_STATUSES),
                or_(compares.c.finishing_at.is_(None), compares.c.finishing_at < _ts(cutoff)),
            ).values(finishing_at=now)).rowcount)

    def is_dispatched(self, compare_id: str) -> bool:
        row = self._row(compare_id)
        return bool(row is not None and row.dispatched)

    def finish(self, compare_id: str, status: str, result: dict | None = None, error: dict | None = None,
               artifacts: list | None = None) -> bool:
        """End the compare once; False when it had already ended (another caller finished it)."""
        with self.engine.begin() as c:
            return bool(c.execute(update(compares)
                                  .where(compares.c.id == compare_id, compares.c.status.notin_(ENDED_STATUSES))
                                  .values(status=status, result=result, error=error, artifacts=artifacts or [],
                                          finished_at=_now())).rowcount)

    def unfinished(self) -> list[str]:
        """Ids of compares that have not ended (the reaper advances them)."""
        with self.engine.connect() as c:
            return list(c.execute(select(compares.c.id).where(compares.c.status.notin_(ENDED_STATUSES))
                                  .order_by(compares.c.created_at)).scalars())
