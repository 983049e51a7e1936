"""The real queue: POST /finetune sends a Celery task by name through a real redis-server, and the
message read back from Redis carries the task name, the job id as task id, and the queue."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient
from service_helpers import ALICE, free_port, make_settings, valid_config

from service.app import create_app
from service.queue import CeleryQueue


def _read_one(url: str, queue: str):
    from kombu import Connection

    with Connection(url) as conn:
        q = conn.SimpleQueue(queue)
        msg = q.get(timeout=5)
        msg.ack()
        q.close()
        return msg


def test_post_sends_the_task_by_name_through_redis(tmp_path, redis_url):  # noqa: F811
    settings = make_settings(tmp_path, broker_url=redis_url, queue="gpu-test")
    app = create_app(settings)
    assert isinstance(app.state.queue, CeleryQueue)
    with TestClient(app) as client:
        assert client.get("/readyz").json()["checks"]["broker"] == "ok"
        r = client.post("/finetune", json=valid_config(), headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    msg = _read_one(redis_url, "gpu-test")
    assert msg.headers["task"] == "reluswap.finetune"
    assert msg.headers["id"] == job_id
    assert msg.delivery_info["routing_key"] == "gpu-test"
    args, kwargs, _embed = msg.decode()
    assert args == [job_id] and kwargs == {}


def test_revoke_and_ping_on_real_redis(tmp_path, redis_url):  # noqa: F811
    q = CeleryQueue(make_settings(tmp_path, broker_url=redis_url))
    q.ping()
    q.revoke("job_x")  # a broadcast; must not raise


def test_dead_broker(tmp_path):
    settings = make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0", readiness_timeout_s=0.5)
    with pytest.raises(redis.exceptions.ConnectionError):
        CeleryQueue(settings).ping(0.5)
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "broker" in r.json()["error"]["message"]
        r = client.post("/finetune", json=valid_config(), headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "broker_unavailable"
        assert client.get(r.headers["location"], headers={"Authorization": f"Bearer {ALICE}"}).json()["status"] == "failed"
