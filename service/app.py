"""The API application: create_app() wires settings, the job store, storage and the queue.

Importing this module never imports torch or worker code (a test checks): the API validates and
records jobs; workers elsewhere run them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from . import errors
from .auth import ConfigurationError, KeyRing
from .compare_store import CompareStore
from .deps import reject_unknown_query
from .openapi import build_openapi
from .queue import CeleryQueue, JobQueue
from .reaper import Reaper
from .routes import activations, artifacts, compare, finetune, health, jobs, metrics, ui
from .settings import Settings
from .storage import LocalStorage, Storage
from .store import JobStore
from .telemetry import Metrics, MetricsMiddleware

__all__ = ["ConfigurationError", "create_app"]

DESCRIPTION = (
    "Swap the ReLUs of a pretrained CNN for learnable activations and fine-tune it. "
    "Create a job with POST /finetune, follow it under /jobs/{id}, download its artifacts."
)


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
        reaper = Reaper(store, queue, settings) if settings.run_reaper else None
        if reaper is not None:
            reaper.start()
        yield
        if reaper is not None:
            reaper.stop()
        if own_store:
            store.close()

    app = FastAPI(title="reluswap", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(reject_unknown_query)])
    app.state.settings, app.state.keys = settings, keys
    app.state.store, app.state.storage, app.state.queue = store, storage, queue
    app.state.compares = CompareStore(store)
    app.state.metrics = Metrics(store)
    errors.install(app)
    for module in (finetune, compare, jobs, artifacts, activations, health, metrics, ui):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = lambda: build_openapi(app)
    return app
