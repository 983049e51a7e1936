"""The REST contract (docs/api.md) through create_app on a SQLite file: auth, validation, idempotency,
listing, cancel, delete, artifacts with Range, error shapes."""

from __future__ import annotations

import hashlib

import pytest
from service_helpers import ALICE, BOB, valid_config

JOB_ROUTES = [
    ("GET", "/jobs/{id}"),
    ("DELETE", "/jobs/{id}"),
    ("POST", "/jobs/{id}/cancel"),
    ("GET", "/jobs/{id}/events"),
    ("GET", "/jobs/{id}/artifacts"),
    ("GET", "/jobs/{id}/artifacts/report.json"),
]


def _error(r, status: int, code: str | None = None, param: str | None = "unset") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}
    if code:
        assert body["error"]["code"] == code
    if param != "unset":
        assert body["error"]["param"] == param
    return body["error"]


# ---- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [("GET", "/jobs"), ("POST", "/finetune"), *JOB_ROUTES])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "Basic YWxpY2U6eA==", f"Bearer {ALICE}x"])
def test_401_without_a_valid_key(api, method, path, auth):  # noqa: F811
    job = api.create()
    headers = {"Authorization": auth} if auth else {}
    r = api.client.request(method, path.format(id=job["id"]), headers=headers, json=valid_config())
    _error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("method,path", JOB_ROUTES)
def test_another_owners_job_is_404(api, method, path):  # noqa: F811
    job = api.create(ALICE)
    api.finish(job["id"])  # ended, so DELETE would succeed for the owner
    api.storage.artifacts_dir(job["id"]).joinpath("report.json").write_text("{}")
    r = api.client.request(method, path.format(id=job["id"]), headers=api.headers(BOB))
    _error(r, 404, "job_not_found")
    # ... exactly like a job that does not exist, and nothing happened to it.
    r2 = api.client.request(method, path.format(id="job_doesnotexist"), headers=api.headers(BOB))
    assert r2.status_code == 404 and r2.json()["error"]["code"] == "job_not_found"
    assert api.client.get(f"/jobs/{job['id']}", headers=api.headers(ALICE)).json()["status"] == "succeeded"
    # The owner reaches it (cancel of an ended job is 409, the rest succeed).
    assert api.client.request(method, path.format(id=job["id"]), headers=api.headers(ALICE)).status_code in (
        200, 204, 409)


def test_other_owners_jobs_are_not_listed(api):  # noqa: F811
    mine = api.create(ALICE)
    api.create(BOB)
    listed = api.client.get("/jobs", headers=api.headers(ALICE)).json()["data"]
    assert [j["id"] for j in listed] == [mine["id"]]


# ---- POST /finetune ------------------------------------------------------------------------------


def test_create_job(api):  # noqa: F811
    r = api.client.post("/finetune", json=valid_config(), headers=api.headers())
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"].endswith(f"/jobs/{job['id']}")
    assert job["status"] == "queued" and job["attempts"] == 0 and job["artifacts"] == []
    assert job["config"]["activation"] == "pvlu" and job["config"]["train"]["optimizer"] == "adam"  # defaults
    assert set(job) == {"id", "status", "created_at", "started_at", "finished_at", "config", "progress",
                        "metrics", "error", "attempts", "artifacts", "compare_id", "arm", "seed_index"}
    assert job["compare_id"] is None and job["arm"] is None  # not a child of a compare job
    assert api.queue.sent == [job["id"]]  # task id == job id
    assert api.client.get(r.headers["location"], headers=api.headers()).json() == job


@pytest.mark.parametrize("patch,param", [
    ({"model": {"arch": "resnet18"}}, "model.arch"),
    ({"model": {"arch": "torchvision:resnet18", "num_classes": 1}}, "model.num_classes"),
    ({"dataset": {"uri": "ftp:x"}}, "dataset.uri"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"trainable": "everything"}}, "train.trainable"),
    ({"strategy": "first:x"}, "strategy"),
    ({"surprise": 1}, "surprise"),
    ({"activation_options": {"granularity": "layer"}, "activation": "convrelu"},
     "activation_options.granularity"),
])
def test_malformed_config_names_the_field(api, patch, param):  # noqa: F811
    r = api.client.post("/finetune", json=valid_config(**patch), headers=api.headers())
    err = _error(r, 422, "invalid_config", param)
    assert param.split(".")[-1] in err["message"]
    assert api.queue.sent == []


def test_unknown_activation_lists_accepted(api):  # noqa: F811
    from converters.catalog import CATALOG

    r = api.client.post("/finetune", json=valid_config(activation="swish"), headers=api.headers())
    err = _error(r, 422, "invalid_config", "activation")
    assert "swish" in err["message"] and all(name in err["message"] for name in CATALOG)


def test_missing_required_and_non_object(api):  # noqa: F811
    _error(api.client.post("/finetune", json={"activation": "pvlu"}, headers=api.headers()), 422, param="model")
    _error(api.client.post("/finetune", json=[1, 2], headers=api.headers()), 422, param="config")
    _error(api.client.post("/finetune", content=b"{nope", headers=api.headers(**{"Content-Type": "application/json"})),
           400, "invalid_json")
    _error(api.client.post("/finetune", content=b"x", headers=api.headers(**{"Content-Type": "text/plain"})),
           415)


def test_upload_references_need_parts(api):  # noqa: F811
    cfg = valid_config(model={"arch": "torchvision:resnet18", "weights": "upload"})
    _error(api.client.post("/finetune", json=cfg, headers=api.headers()), 422, "missing_upload", "model.weights")
    cfg = valid_config(dataset={"uri": "upload"})
    _error(api.client.post("/finetune", json=cfg, headers=api.headers()), 422, "missing_upload", "dataset.uri")


def test_data_paths_must_be_under_an_allowed_root(api):  # noqa: F811
    inside = api.tmp / "data" / "cifar"
    inside.mkdir()
    api.create(config=valid_config(dataset={"uri": f"imagefolder:{inside}"}))
    api.create(config=valid_config(dataset={"uri": f"archive:{inside}/set.zip"}))
    for uri in (f"imagefolder:{api.tmp}", f"imagefolder:{inside}/../../", "imagefolder:/etc",
                "imagefolder:data/cifar", f"archive:{api.tmp}/x.zip"):
        r = api.client.post("/finetune", json=valid_config(dataset={"uri": uri}), headers=api.headers())
        err = _error(r, 422, "invalid_config", "dataset.uri")
        assert str(api.tmp / "data") in err["message"]  # says where data may live
    # A symlink inside the root that points outside does not pass.
    (api.tmp / "data" / "escape").symlink_to("/etc")
    r = api.client.post("/finetune", json=valid_config(dataset={"uri": f"imagefolder:{api.tmp}/data/escape"}),
                        headers=api.headers())
    _error(r, 422, param="dataset.uri")


def test_idempotency_key(api):  # noqa: F811
    h = api.headers(**{"Idempotency-Key": "abc"})
    first = api.client.post("/finetune", json=valid_config(), headers=h)
    again = api.client.post("/finetune", json=valid_config(), headers=h)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert api.queue.sent == [first.json()["id"]]  # sent once
    # Same key, different body: refused.
    r = api.client.post("/finetune", json=valid_config(activation="frelu"), headers=h)
    _error(r, 409, "idempotency_conflict", "Idempotency-Key")
    # Another owner's same key is independent.
    other = api.client.post("/finetune", json=valid_config(), headers=api.headers(BOB, **{"Idempotency-Key": "abc"}))
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_broker_down_is_503_and_the_job_failed(api):  # noqa: F811
    api.queue.fail_send = ConnectionError("connection refused")
    r = api.client.post("/finetune", json=valid_config(), headers=api.headers())
    _error(r, 503, "broker_unavailable")
    job = api.client.get(r.headers["location"], headers=api.headers()).json()
    assert job["status"] == "failed" and job["error"]["code"] == "broker_unavailable"


# ---- GET /jobs -----------------------------------------------------------------------------------


def test_list_cursor_pagination_and_status(api):  # noqa: F811
    ids = [api.create()["id"] for _ in range(5)]
    api.client.post(f"/jobs/{ids[1]}/cancel", headers=api.headers())
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.client.get("/jobs", params=params, headers=api.headers()).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1]
    page = api.client.get("/jobs", params={"status": "cancelled"}, headers=api.headers()).json()
    assert [j["id"] for j in page["data"]] == [ids[1]] and page["has_more"] is False
    assert len(api.client.get("/jobs", params={"status": "queued"}, headers=api.headers()).json()["data"]) == 4
    _error(api.client.get("/jobs", params={"status": "done"}, headers=api.headers()), 422, "invalid_request", "status")
    _error(api.client.get("/jobs", params={"limit": 101}, headers=api.headers()), 422, param="limit")
    _error(api.client.get("/jobs", params={"after": "job_nope"}, headers=api.headers()), 422, "invalid_cursor", "after")


# ---- cancel and delete ---------------------------------------------------------------------------


def test_cancel(api):  # noqa: F811
    queued = api.create()
    r = api.client.post(f"/jobs/{queued['id']}/cancel", headers=api.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert api.queue.revoked == [queued["id"]]
    assert api.store.claim(queued["id"], "w", 60) is None  # it never runs
    _error(api.client.post(f"/jobs/{queued['id']}/cancel", headers=api.headers()), 409, "job_ended")

    running = api.create()
    api.store.claim(running["id"], "w", 60)
    r = api.client.post(f"/jobs/{running['id']}/cancel", headers=api.headers())
    assert r.json()["status"] == "cancelling" and api.store.is_cancel_requested(running["id"])
    api.store.finish(running["id"], "w", "cancelled")
    assert api.client.get(f"/jobs/{running['id']}", headers=api.headers()).json()["status"] == "cancelled"
    _error(api.client.post(f"/jobs/{running['id']}/cancel", headers=api.headers()), 409, "job_ended")


def test_delete(api):  # noqa: F811
    job = api.create()
    _error(api.client.delete(f"/jobs/{job['id']}", headers=api.headers()), 409, "job_not_ended")
    api.finish(job["id"])
    (api.storage.artifacts_dir(job["id"]) / "model.onnx").write_bytes(b"onnx")
    r = api.client.delete(f"/jobs/{job['id']}", headers=api.headers())
    assert r.status_code == 204 and r.content == b""
    assert not api.storage.job_dir(job["id"]).exists()
    _error(api.client.get(f"/jobs/{job['id']}", headers=api.headers()), 404)
    _error(api.client.delete(f"/jobs/{job['id']}", headers=api.headers()), 404)


# ---- events (JSON) -------------------------------------------------------------------------------


def test_events_json(api):  # noqa: F811
    job = api.create()
    for i in range(4):
        api.store.add_event(job["id"], "log", f"line {i}", level="info", data={"i": i})
    body = api.client.get(f"/jobs/{job['id']}/events", headers=api.headers()).json()
    assert [e["type"] for e in body["data"]] == ["status", "log", "log", "log", "log"]
    assert body["has_more"] is False and isinstance(body["data"][0]["id"], str)
    first = body["data"][1]["id"]
    page = api.client.get(f"/jobs/{job['id']}/events", params={"after": first, "limit": 2},
                          headers=api.headers()).json()
    assert [e["message"] for e in page["data"]] == ["line 1", "line 2"] and page["has_more"] is True


# ---- artifacts -----------------------------------------------------------------------------------


@pytest.fixture
def finished(api):  # noqa: F811
    job = api.create()
    api.finish(job["id"])
    d = api.storage.artifacts_dir(job["id"])
    blob = bytes(range(256)) * 40  # 10240 bytes
    (d / "weights.safetensors").write_bytes(blob)
    (d / "report.json").write_text('{"final_accuracy": 0.9}')
    return job["id"], blob


def test_artifact_list(api, finished):  # noqa: F811
    job_id, blob = finished
    data = api.client.get(f"/jobs/{job_id}/artifacts", headers=api.headers()).json()["data"]
    assert [a["name"] for a in data] == ["report.json", "weights.safetensors"]
    w = data[1]
    assert w == {"name": "weights.safetensors", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                 "content_type": "application/octet-stream"}
    assert data[0]["content_type"] == "application/json"


def test_artifact_download_and_ranges(api, finished):  # noqa: F811
    job_id, blob = finished
    url, n = f"/jobs/{job_id}/artifacts/weights.safetensors", len(blob)
    r = api.client.get(url, headers=api.headers())
    assert r.status_code == 200 and r.content == blob and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(n)
    for spec, (first, last) in {"bytes=10-19": (10, 19), "bytes=10000-": (10000, n - 1),
                                "bytes=-5": (n - 5, n - 1), "bytes=10230-99999": (10230, n - 1)}.items():
        r = api.client.get(url, headers=api.headers(Range=spec))
        assert r.status_code == 206, spec
        assert r.content == blob[first:last + 1]
        assert r.headers["content-range"] == f"bytes {first}-{last}/{n}"
    for spec in (f"bytes={n}-", "bytes=-0", "bytes=99999-100000"):
        r = api.client.get(url, headers=api.headers(Range=spec))
        _error(r, 416, "range_not_satisfiable", "Range")
        assert r.headers["content-range"] == f"bytes */{n}"
    r = api.client.get(f"/jobs/{job_id}/artifacts/report.json", headers=api.headers(Range="bytes=0-3"))
    assert r.status_code == 206 and r.content == b'{"fi'
    assert r.headers["content-type"] == "application/json"  # the file's own type, as the listing says
    assert r.headers["content-security-policy"] == "sandbox" and r.headers["x-content-type-options"] == "nosniff"
    # Ignored (whole file): malformed, multiple ranges, other units.
    for spec in ("bytes=5-1", "bytes=0-1,5-6", "items=0-1", "bytes=x-"):
        r = api.client.get(url, headers=api.headers(Range=spec))
        assert r.status_code == 200 and r.content == blob, spec


def test_artifact_names_cannot_escape(api, finished):  # noqa: F811
    job_id, _ = finished
    (api.tmp / "secret.txt").write_text("secret")
    for name in ("..%2F..%2F..%2Fsecret.txt", "%2E%2E", ".hidden", "nope.onnx"):
        r = api.client.get(f"/jobs/{job_id}/artifacts/{name}", headers=api.headers())
        assert r.status_code == 404 and "secret" not in r.text, name


# ---- the rest of the surface ---------------------------------------------------------------------


def test_activations_catalogue(api):  # noqa: F811
    from converters.catalog import CATALOG

    data = api.client.get("/activations").json()["data"]
    assert [a["name"] for a in data] == list(CATALOG)
    pvlu = next(a for a in data if a["name"] == "pvlu")
    assert pvlu == CATALOG["pvlu"].to_dict()


def test_health_ready_metrics(api):  # noqa: F811
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    api.queue.fail_ping = ConnectionError("broker down")
    err = _error(api.client.get("/readyz"), 503, "not_ready")
    assert "broker" in err["message"] and "database" not in err["message"]
    api.create()
    text = api.client.get("/metrics").text
    assert 'reluswap_jobs{status="queued"} 1.0' in text
    assert 'reluswap_http_requests_total{method="POST",route="/finetune",status="202"} 1.0' in text
    assert 'route="/readyz"' in text and "reluswap_http_request_duration_seconds_bucket" in text


def test_framework_errors_use_the_error_shape(api):  # noqa: F811
    _error(api.client.get("/nowhere"), 404, "not_found", None)
    _error(api.client.put("/jobs", headers=api.headers()), 405, "method_not_allowed")
    _error(api.client.get("/jobs", params={"limit": "many"}, headers=api.headers()), 422, "invalid_request", "limit")
    err = _error(api.client.get("/jobs", params={"limt": 5}, headers=api.headers()), 422, "invalid_request", "limt")
    assert "after, compare_id, limit, status" in err["message"]  # a typo is not silently ignored
    job = api.create()
    r = api.client.put(f"/jobs/{job['id']}", headers=api.headers())
    _error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET"  # every method of the path, not the first route's


def test_a_query_parameter_given_twice_is_refused(api):
    r = api.client.get("/jobs?status=queued&status=failed", headers=api.headers())
    assert r.status_code == 422 and r.json()["error"]["param"] == "status"
    assert "given 2 times" in r.json()["error"]["message"]
