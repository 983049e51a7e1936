"""The Celery app of the GPU workers.

Settings that held up in measurement (docs/design.md): late acks and reject on
a lost worker (a killed pool child's job is redelivered), prefetch 1, one job per child process
(fresh CUDA context, memory released when it exits), and a visibility timeout above the longest
job so Redis does not hand a running job to a second worker. The job table, not the broker, owns
liveness: a task claims its job atomically before running it (see worker/runner.py).

torch is never imported here: CUDA cannot be re-initialised in a forked child, so only the
child (inside the task) imports it.
"""

from __future__ import annotations

from celery import Celery

from service.contract import TASK_NAME
from service.settings import Settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery("reluswap", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_concurrency=1,
        task_default_queue=settings.queue,
        task_routes={TASK_NAME: {"queue": settings.queue}},
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.reluswap_settings = settings
    return app


app = make_celery()
