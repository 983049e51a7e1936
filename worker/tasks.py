"""Celery tasks, registered by name: the API sends "reluswap.finetune" without importing this."""

from __future__ import annotations

from .celery_app import TASK_NAME, app


@app.task(name=TASK_NAME, bind=True)
def finetune(self, job_id: str) -> str:
    # Imported here, in the pool child, so the parent never touches torch or CUDA.
    from .runner import execute

    return execute(job_id, app.conf.reluswap_settings, node=self.request.hostname)
