"""The job tables (SQLAlchemy Core): the single source of truth for job state, shared by API and workers."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database (SQLite keeps no zone), aware UTC in Python, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_EventId = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),  # also the Celery task id
    Column("owner", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("config", JSON, nullable=False),
    Column("progress", JSON),
    Column("metrics", JSON),
    Column("error", JSON),
    Column("artifacts", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(255)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("heartbeat_at", UTCDateTime),
    # A child of a compare job: its compare, arm, kind (original | train) and seed index.
    Column("compare_id", String(64)),
    Column("arm", String(255)),
    Column("child_kind", String(16)),
    Column("seed_index", Integer),
    # Listing is per owner, newest first; the cursor compares (created_at, id).
    Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    Index("ix_jobs_compare", "compare_id"),
    Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    # One live key per owner; an expired key is released (set NULL) before reuse.
    Index("ux_jobs_owner_idempotency", "owner", "idempotency_key", unique=True),
)

compares = Table(
    "compares",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    # Stored only when it ends; until then derived from the children (compare_store.py).
    Column("status", String(16), nullable=False),
    Column("config", JSON, nullable=False),
    Column("controls", JSON, nullable=False),  # arm names of the controls
    Column("arms", JSON),  # every arm name, in the plan's order (controls first)
    Column("dispatched", Boolean, nullable=False, default=False),  # training children sent
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("result", JSON),  # winner and a summary of the leaderboard
    Column("error", JSON),
    Column("artifacts", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("finishing_at", UTCDateTime),  # claimed by the process writing the leaderboard
    Index("ix_compares_owner_created", "owner", "created_at", "id"),
    Index("ix_compares_status", "status"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", _EventId, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("level", String(16), nullable=False, default="info"),
    Column("message", Text, nullable=False, default=""),
    Column("data", JSON),
    Index("ix_job_events_job", "job_id", "id"),
)
