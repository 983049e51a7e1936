"""LocalStorage: job files stay inside the root whatever the names say."""

from __future__ import annotations

import pytest

from service.storage import LocalStorage, StorageError


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "root")


@pytest.mark.parametrize("job_id", ["..", "../x", "a/b", "", ".", "/etc", "x" * 200, "job\0"])
def test_job_ids_cannot_escape(storage, job_id):
    with pytest.raises(StorageError):
        storage.job_dir(job_id)
    with pytest.raises(StorageError):
        storage.delete_job(job_id)


@pytest.mark.parametrize("name", ["../../secret", "..", "a/b", ".env", "/etc/passwd", ""])
def test_artifact_names_cannot_escape(storage, name):
    storage.artifacts_dir("job_1")
    with pytest.raises(StorageError):
        storage.open_artifact("job_1", name)


def test_symlink_out_of_the_root_is_refused(storage, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    d = storage.artifacts_dir("job_1")
    (d / "model.onnx").symlink_to(secret)
    (d / "report.json").write_text("{}")
    with pytest.raises(StorageError):
        storage.open_artifact("job_1", "model.onnx")
    assert [a["name"] for a in storage.list_artifacts("job_1")] == ["report.json"]


def test_incoming_adopt_uploads_and_delete(storage):
    incoming = storage.new_incoming()
    (incoming / "weights.safetensors").write_bytes(b"w")
    (incoming / "dataset.tar.gz").write_bytes(b"d")
    storage.adopt("job_1", incoming)
    assert not incoming.exists()
    ups = storage.uploads("job_1")
    assert {k: p.name for k, p in ups.items()} == {"weights": "weights.safetensors", "dataset": "dataset.tar.gz"}
    (storage.artifacts_dir("job_1") / "a.json").write_text("{}")
    other = storage.artifacts_dir("job_2")
    storage.delete_job("job_1")
    assert not storage.job_dir("job_1").exists() and other.exists()
    with pytest.raises(StorageError):
        storage.adopt("job_3", storage.root.parent)  # only directories inside the root move
    storage.check()


def test_artifact_listing_and_digest_cache(storage):
    d = storage.artifacts_dir("job_1")
    (d / "weights.safetensors").write_bytes(b"abc")
    first = storage.list_artifacts("job_1")[0]
    assert first["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    (d / "weights.safetensors").write_bytes(b"abcd")  # new size: digest recomputed
    assert storage.list_artifacts("job_1")[0]["sha256"] != first["sha256"]
    f, size = storage.open_artifact("job_1", "weights.safetensors")
    with f:
        assert size == 4 and f.read() == b"abcd"
