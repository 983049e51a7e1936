"""Schemathesis over the OpenAPI schema, in-process: no 5xx, and every response (status, headers,
content type, body) conforms to what the schema declares. Bounded to a few examples per operation.

The app is built at import (schemathesis' from_fixture loader does not run on pytest 9: it reads
the removed Node._nodeid), in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from service_helpers import ALICE, make_settings, valid_config

from service.app import create_app
from service.queue import MemoryQueue

_TMP = Path(tempfile.mkdtemp(prefix="reluswap-schema-"))
app = create_app(make_settings(_TMP), queue=MemoryQueue())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
# atexit, not a fixture: every xdist worker imports (and so builds) this, even one that runs none of it.
atexit.register(shutil.rmtree, _TMP, True)
atexit.register(app.state.store.close)


def _seed_jobs() -> list[str]:
    """Jobs in every state, with artifacts, so job routes are exercised on real records too."""
    store, storage, ids = app.state.store, app.state.storage, []
    for status in ("queued", "running", "cancelling", "succeeded", "failed", "cancelled"):
        job_id = store.create_job("alice", valid_config())[0]["id"]
        if status != "queued":
            store.claim(job_id, "w", 3600)
            store.update_progress(job_id, "w", {"stage": "training", "fraction": 0.5})
        if status == "cancelling":
            store.request_cancel(job_id, "alice")
        if status in ("succeeded", "failed", "cancelled"):
            store.finish(job_id, "w", status, metrics={"final_accuracy": 0.9},
                         error={"code": "x", "message": "y"} if status == "failed" else None)
            (storage.artifacts_dir(job_id) / "report.json").write_text('{"ok": true}')
            (storage.artifacts_dir(job_id) / "model.onnx").write_bytes(b"\0" * 1000)
        store.add_event(job_id, "log", "hello", data={"n": 1})
        ids.append(job_id)
    return ids


_SEEDED = itertools.cycle(_seed_jobs())
_calls = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    app.state.store.close()
    shutil.rmtree(_TMP, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    # Every other example aims at a real job (a random id is only ever 404) and a real artifact.
    params = case.path_parameters
    if params and "job_id" in params and next(_calls) % 2:
        params["job_id"] = next(_SEEDED)
        if "name" in params:
            params["name"] = "report.json"
    # positive_data_acceptance is left out: some rules of a valid job cannot be written in JSON
    # Schema (a strategy's grammar, granularity per activation, an `upload` needing its file part,
    # paths under this server's data roots), so schema-valid bodies can rightly get 422.
    case.call_and_validate(headers={"Authorization": f"Bearer {ALICE}"},
                           excluded_checks=[positive_data_acceptance])
