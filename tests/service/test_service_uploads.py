"""Multipart POST /finetune: files streamed to disk, the size limit enforced before and during the
body, nothing left behind on failure."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import ALICE, asgi_request, make_settings, multipart_body, valid_config

from service.app import create_app
from service.queue import MemoryQueue

BOUNDARY = "reluswap-test-boundary"
CHUNK = 64 * 1024


def _mp_headers(**extra) -> dict:
    return {"Authorization": f"Bearer {ALICE}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            **extra}


def _incoming_left(storage) -> list:
    d = storage.root / "incoming"
    return list(d.iterdir()) if d.exists() else []


def _upload_config() -> bytes:
    cfg = valid_config(model={"arch": "torchvision:resnet18", "weights": "upload"}, dataset={"uri": "upload"})
    return json.dumps(cfg).encode()


def test_multipart_upload_lands_under_the_job(api):  # noqa: F811
    weights, dataset = b"W" * 300_000, b"PK\x03\x04" + b"D" * 200_000
    body = multipart_body(BOUNDARY, [("config", None, _upload_config()),
                                     ("weights", "resnet.safetensors", weights), ("dataset", "digits.ZIP", dataset)])
    r = api.client.post("/finetune", content=body, headers=_mp_headers())
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    files = api.storage.uploads(job_id)
    assert sorted(files) == ["dataset", "weights"]
    assert files["weights"].name == "weights.safetensors" and files["dataset"].name == "dataset.zip"
    assert files["weights"].read_bytes() == weights and files["dataset"].read_bytes() == dataset
    assert _incoming_left(api.storage) == [] and api.queue.sent == [job_id]


def test_multipart_idempotent_replay_keeps_one_copy(api):  # noqa: F811
    body = multipart_body(BOUNDARY, [("config", None, _upload_config()), ("weights", "w.pt", b"w" * 1000),
                                     ("dataset", "d.tar.gz", b"d" * 1000)])
    h = _mp_headers(**{"Idempotency-Key": "up-1"})
    a = api.client.post("/finetune", content=body, headers=h).json()
    b = api.client.post("/finetune", content=body, headers=h).json()
    assert a["id"] == b["id"] and _incoming_left(api.storage) == []
    # Same config, different file bytes: a different request.
    other = multipart_body(BOUNDARY, [("config", None, _upload_config()), ("weights", "w.pt", b"x" * 1000),
                                      ("dataset", "d.tar.gz", b"d" * 1000)])
    r = api.client.post("/finetune", content=other, headers=h)
    assert r.status_code == 409 and _incoming_left(api.storage) == []


@pytest.mark.parametrize("parts,status,param", [
    ([("config", None, b"{}"), ("weights", "w.bin", b"x")], 422, "weights"),
    ([("config", None, b"{}"), ("dataset", "d.rar", b"x")], 422, "dataset"),
    ([("config", None, b"{}"), ("notes", "n.txt", b"x")], 422, "notes"),
    ([("weights", "w.pt", b"x")], 422, "config"),
    ([("config", None, b"{not json")], 422, "config"),
    ([("config", None, b"{}"), ("config", None, b"{}")], 422, "config"),
    ([("config", None, b"{}"), ("weights", None, b"x")], 422, "weights"),
])
def test_bad_parts(api, parts, status, param):  # noqa: F811
    r = api.client.post("/finetune", content=multipart_body(BOUNDARY, parts), headers=_mp_headers())
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert _incoming_left(api.storage) == [] and api.queue.sent == []


def test_file_part_without_upload_reference(api):  # noqa: F811
    body = multipart_body(BOUNDARY, [("config", None, json.dumps(valid_config()).encode()),
                                     ("weights", "w.pt", b"x")])
    r = api.client.post("/finetune", content=body, headers=_mp_headers())
    assert r.status_code == 422 and r.json()["error"]["code"] == "unexpected_upload"
    assert _incoming_left(api.storage) == []


def test_invalid_config_in_multipart_deletes_the_files(api):  # noqa: F811
    cfg = valid_config(activation="nope", model={"arch": "torchvision:resnet18", "weights": "upload"})
    body = multipart_body(BOUNDARY, [("config", None, json.dumps(cfg).encode()), ("weights", "w.pt", b"x" * 10_000)])
    r = api.client.post("/finetune", content=body, headers=_mp_headers())
    assert r.status_code == 422 and r.json()["error"]["param"] == "activation"
    assert _incoming_left(api.storage) == []


@pytest.fixture
def small_limit_app(tmp_path):
    """An app that accepts at most 1 MiB per request."""
    settings = make_settings(tmp_path, max_upload_bytes=1024 * 1024)
    return create_app(settings, queue=MemoryQueue())


def _endless_upload():
    """A multipart body whose weights part never ends (about 100 MiB if fully read)."""
    head = multipart_body(BOUNDARY, [("config", None, _upload_config())]).rsplit(f"--{BOUNDARY}--".encode(), 1)[0]
    yield head + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="weights"; filename="w.pt"\r\n\r\n'.encode()
    for _ in range(1600):
        yield b"\0" * CHUNK


def test_declared_length_over_limit_is_413_before_reading(small_limit_app):
    headers = _mp_headers(**{"Content-Length": str(100 * 1024 * 1024)})
    res = asgi_request(small_limit_app, "POST", "/finetune", headers, _endless_upload())
    assert res.status == 413 and json.loads(res.body)["error"]["code"] == "payload_too_large"
    assert res.pulled == 0  # refused on the header alone
    assert _incoming_left(small_limit_app.state.storage) == []


def test_streamed_body_over_limit_is_cut_off_mid_stream(small_limit_app):
    """No Content-Length (chunked): the app stops pulling just past the limit and deletes the partial file."""
    res = asgi_request(small_limit_app, "POST", "/finetune", _mp_headers(), _endless_upload())
    assert res.status == 413
    limit = small_limit_app.state.settings.max_upload_bytes
    assert limit < res.pulled <= limit + 2 * CHUNK  # about 1 MiB read of the 100 MiB on offer
    assert _incoming_left(small_limit_app.state.storage) == []
    assert small_limit_app.state.queue.sent == []


def test_lying_content_length_is_cut_off_too(small_limit_app):
    res = asgi_request(small_limit_app, "POST", "/finetune", _mp_headers(**{"Content-Length": "1000"}),
                       _endless_upload())
    assert res.status == 413 and res.pulled <= small_limit_app.state.settings.max_upload_bytes + 2 * CHUNK


def test_413_through_the_test_client(small_limit_app):
    with TestClient(small_limit_app) as client:
        r = client.post("/finetune", content=b"".join(_endless_upload()), headers=_mp_headers())
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert _incoming_left(small_limit_app.state.storage) == []


def test_upload_under_limit_streams_to_disk(small_limit_app):
    data = bytes(range(256)) * 3000  # 768 000 bytes in 12 chunks
    head = multipart_body(BOUNDARY, [("config", None, _upload_config())]).rsplit(f"--{BOUNDARY}--".encode(), 1)[0]

    def chunks():
        yield head + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="weights"; filename="w.pth"\r\n\r\n'.encode()
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]
        yield f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="dataset"; filename="d.tgz"\r\n\r\n'.encode()
        yield b"tgz\r\n" + f"--{BOUNDARY}--\r\n".encode()

    res = asgi_request(small_limit_app, "POST", "/finetune", _mp_headers(), chunks())
    assert res.status == 202, res.body
    job_id = json.loads(res.body)["id"]
    saved = small_limit_app.state.storage.uploads(job_id)["weights"]
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(data).digest()
