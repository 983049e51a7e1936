"""The service end to end with real parts: a real redis-server, the API under uvicorn, a real
Celery prefork worker process, SQLite, the reaper. Jobs fine-tune a digits resnet18 on CPU."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from job_helpers import job_config

from reluswap.supervisor import start_embedded

HEARTBEAT_TIMEOUT_S = 4.0
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    embedded = start_embedded(tmp_path_factory.mktemp("service"), heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    yield embedded
    embedded.stop(timeout=10)


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"}, timeout=60) as c:
        yield c


def submit(client, weights, config: dict) -> dict:
    with open(weights, "rb") as f:
        response = client.post("/finetune", data={"config": json.dumps(config)},
                               files={"weights": ("weights.safetensors", f, "application/octet-stream")})
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(client, job_id: str, predicate, timeout: float, seen: list | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if seen is not None:
            seen.append((job["status"], (job.get("progress") or {}).get("stage"), (job.get("progress") or {}).get("step")))
        if predicate(job):
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} never reached the condition; last: {job['status']} {job.get('progress')}")


def quick(activation="pvlu", strategy="all", **train) -> dict:
    config = job_config(activation, strategy, **train)
    config["export"] = {"onnx": False, "pt2": False}
    return config


def test_happy_path(client, pretrained_digits, tmp_path):  # noqa: F811
    config = job_config("pvlu", "all", epochs=1)
    config["export"] = {"onnx": True, "pt2": True}
    job = submit(client, pretrained_digits, config)
    seen: list = []
    done = wait_for(client, job["id"], lambda j: j["status"] in ENDED, 600, seen)
    assert done["status"] == "succeeded", done["error"]
    assert any(status == "running" and stage == "training" and step for status, stage, step in seen), seen
    assert done["attempts"] == 1
    m = done["metrics"]
    assert m["sites_total"] == 17 and m["sites_replaced"] == 17
    assert m["converted_accuracy_at_init"] == m["baseline_accuracy"]
    assert m["onnx_max_abs_diff"] < 1e-3
    events = client.get(f"/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert {"stage", "epoch"} <= {e["type"] for e in events}

    listed = client.get(f"/jobs/{job['id']}/artifacts").json()["data"]
    names = {a["name"] for a in listed}
    assert {"model.onnx", "model.pt2", "weights.safetensors", "conversion.json", "report.json"} <= names
    onnx_bytes = client.get(f"/jobs/{job['id']}/artifacts/model.onnx").content
    assert len(onnx_bytes) == next(a["size"] for a in listed if a["name"] == "model.onnx")
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (3, 10)


def test_cancel_a_queued_and_a_running_job(client, pretrained_digits):  # noqa: F811
    running = submit(client, pretrained_digits, quick(epochs=20))
    queued = submit(client, pretrained_digits, quick())
    wait_for(client, running["id"], lambda j: (j.get("progress") or {}).get("stage") == "training", 300)

    cancelled = client.post(f"/jobs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    asked = time.monotonic()
    assert client.post(f"/jobs/{running['id']}/cancel").json()["status"] == "cancelling"
    stopped = wait_for(client, running["id"], lambda j: j["status"] in ENDED, 60)
    assert stopped["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    assert client.post(f"/jobs/{running['id']}/cancel").status_code == 409

    time.sleep(3)  # the worker has taken the queued message by now: it must not run the job
    never = client.get(f"/jobs/{queued['id']}").json()
    assert never["status"] == "cancelled" and never["attempts"] == 0 and never["started_at"] is None


def test_killed_worker_resumes_from_its_checkpoint(service, client, pretrained_digits):  # noqa: F811
    job = submit(client, pretrained_digits, quick(epochs=2))
    wait_for(client, job["id"], lambda j: (j.get("progress") or {}).get("epoch") == 2
             and (j.get("progress") or {}).get("step", 0) > (j.get("progress") or {}).get("steps", 99) // 3, 600)
    first = client.get(f"/jobs/{job['id']}").json()
    service.kill_worker()
    killed_at = time.monotonic()
    assert first["status"] == "running"
    service.start_worker()
    done = wait_for(client, job["id"], lambda j: j["status"] in ENDED, 600)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2

    events = client.get(f"/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    attempts = [e for e in events if e["type"] == "status" and "attempt" in (e.get("data") or {})]
    assert [e["data"]["attempt"] for e in attempts] == [1, 2]
    assert attempts[0]["data"]["worker"] != attempts[1]["data"]["worker"]
    assert any("worker lost" in e["message"] for e in events)  # the reaper requeued it
    assert any("resumed from the checkpoint of epoch 1" in e["message"] for e in events)
    # The second attempt started only after the first worker was dead (claims are exclusive).
    assert time.monotonic() - killed_at > HEARTBEAT_TIMEOUT_S
    report = json.loads(client.get(f"/jobs/{job['id']}/artifacts/report.json").content)
    assert report["training"]["resumed_from_epoch"] == [1]


def test_queued_jobs_survive_a_redis_restart(service, client, pretrained_digits):  # noqa: F811
    service.kill_worker()  # nothing consumes while redis restarts
    try:
        jobs = [submit(client, pretrained_digits, quick(max_steps=1)) for _ in range(2)]
        service.restart_redis()
    finally:
        service.start_worker()
    for job in jobs:
        done = wait_for(client, job["id"], lambda j: j["status"] in ENDED, 600)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
