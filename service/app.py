"""The API application: create_app() wires settings, the job store, storage and the queue.

Importing this module never imports torch or worker code (a test checks): the API validates and
records jobs; workers elsewhere run them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from . import errors
from .auth import ConfigurationError, KeyRing
from .job_config import JobConfig
from .queue import CeleryQueue, JobQueue
from .routes import activations, artifacts, finetune, health, jobs, metrics
from .settings import Settings
from .storage import LocalStorage, Storage
from .store import JobStore
from .telemetry import Metrics, MetricsMiddleware

__all__ = ["ConfigurationError", "create_app"]

DESCRIPTION = (
    "Swap the ReLUs of a pretrained CNN for learnable activations and fine-tune it. "
    "Create a job with POST /finetune, follow it under /jobs/{id}, download its artifacts."
)


def _openapi(app: FastAPI):
    """The generated schema, plus JobConfig's models (POST /finetune reads its body by hand, to
    stream multipart uploads, so FastAPI cannot see the body model)."""

    def build() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            config_schema = JobConfig.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(config_schema.pop("$defs", {}))
            components["JobConfig"] = config_schema
            _own_validation_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def _own_validation_errors(schema: dict) -> None:
    """FastAPI documents its default 422 body; ours is the ErrorBody shape (errors.py)."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            resp = op.get("responses", {}).get("422")
            if resp:
                resp["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def create_app(settings: Settings | None = None, store: JobStore | None = None,
               queue: JobQueue | None = None, storage: Storage | None = None) -> FastAPI:
    settings = settings or Settings()
    keys = KeyRing(settings)  # refuses an open server unless local development on loopback
    own_store = store is None
    store = store or JobStore(settings.database_url)
    storage = storage or LocalStorage(settings.storage_dir)
    queue = queue or CeleryQueue(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if own_store:
            store.close()

    app = FastAPI(title="reluswap", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.keys = settings, keys
    app.state.store, app.state.storage, app.state.queue = store, storage, queue
    app.state.metrics = Metrics(store)
    errors.install(app)
    for module in (finetune, jobs, artifacts, activations, health, metrics):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = _openapi(app)
    return app
