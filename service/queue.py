"""Handing jobs to the workers: a Celery task sent BY NAME, so the API never imports worker code.

The message only says "run job <id>" (the task id is the job id); the job table holds everything
else, so a lost or duplicated message is harmless (the worker's claim decides).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from .contract import TASK_NAME
from .settings import Settings


class JobQueue(ABC):
    @abstractmethod
    def send(self, job_id: str) -> None: ...

    @abstractmethod
    def revoke(self, job_id: str) -> None: ...

    @abstractmethod
    def ping(self, timeout_s: float = 1.0) -> None:
        """Raise when the broker cannot be reached."""


class CeleryQueue(JobQueue):
    def __init__(self, settings: Settings):
        self.settings = settings
        self._app = None
        self._lock = threading.Lock()

    @property
    def app(self):
        with self._lock:
            if self._app is None:
                from celery import Celery  # imported on first use: keeps the API import light

                app = Celery("reluswap-api", broker=self.settings.broker_url)
                app.conf.update(
                    broker_connection_timeout=2,
                    # A dead broker fails the POST in about a second instead of blocking it.
                    task_publish_retry_policy={"max_retries": 2, "interval_start": 0,
                                               "interval_step": 0.2, "interval_max": 0.5},
                    broker_transport_options={"visibility_timeout": self.settings.visibility_timeout_s},
                )
                self._app = app
            return self._app

    def send(self, job_id: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=self.settings.queue)

    def revoke(self, job_id: str) -> None:
        # Best effort: a revoked message is dropped by workers; the claim refuses cancelled jobs anyway.
        self.app.control.revoke(job_id)

    def ping(self, timeout_s: float = 1.0) -> None:
        url = self.settings.broker_url
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            try:
                client.ping()
            finally:
                client.close()
            return
        from kombu import Connection

        with Connection(url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)


class MemoryQueue(JobQueue):
    """Records sends and revokes in memory: for tests and a single-process demo without a broker."""

    def __init__(self):
        self.sent: list[str] = []
        self.revoked: list[str] = []
        self.fail_send: Exception | None = None  # set to make send raise (broker down)
        self.fail_ping: Exception | None = None

    def send(self, job_id: str) -> None:
        if self.fail_send:
            raise self.fail_send
        self.sent.append(job_id)

    def revoke(self, job_id: str) -> None:
        self.revoked.append(job_id)

    def ping(self, timeout_s: float = 1.0) -> None:
        if self.fail_ping:
            raise self.fail_ping
