"""A data directory written by an earlier version keeps working: init_db adds the columns a newer
version added (here: the compare fields of the jobs table) to the tables that already exist."""

from __future__ import annotations

import sqlalchemy as sa

from service.store import JobStore


def test_an_older_jobs_table_gets_the_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:  # the jobs table as the first version created it
        c.execute(sa.text(
            "CREATE TABLE jobs (id VARCHAR(64) PRIMARY KEY, owner VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL,"
            " config JSON NOT NULL, progress JSON, metrics JSON, error JSON, artifacts JSON, attempts INTEGER NOT NULL,"
            " worker VARCHAR(255), cancel_requested BOOLEAN NOT NULL, idempotency_key VARCHAR(255),"
            " request_hash VARCHAR(64), created_at DATETIME NOT NULL, started_at DATETIME, finished_at DATETIME,"
            " heartbeat_at DATETIME)"))
    engine.dispose()
    store = JobStore(url)
    columns = {col["name"] for col in sa.inspect(store.engine).get_columns("jobs")}
    assert {"compare_id", "arm", "child_kind", "seed_index"} <= columns
    job, created = store.create_job("alice", {"activation": "pvlu"})
    assert created and job["compare_id"] is None
    JobStore(url)  # idempotent: a second start adds nothing and does not fail
