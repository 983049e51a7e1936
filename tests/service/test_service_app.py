"""The app as a process sees it: no torch or worker import, settings from the environment, and a
refusal to start open to the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import make_settings, valid_config

from service.app import create_app
from service.auth import ConfigurationError, KeyRing, hash_key
from service.queue import MemoryQueue
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys, tempfile
from service.app import create_app
from service.settings import Settings
from service.queue import MemoryQueue
from fastapi.testclient import TestClient
d = tempfile.mkdtemp()
app = create_app(Settings(data_dir=d, api_keys=["a:k"]), queue=MemoryQueue())
cfg = {"model": {"arch": "torchvision:resnet18"}, "dataset": {"uri": "builtin:digits"}, "activation": "convrelu"}
with TestClient(app) as c:
    assert c.post("/finetune", json=cfg, headers={"Authorization": "Bearer k"}).status_code == 202
    assert c.get("/activations").status_code == 200
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "worker", "onnx"))
print(json.dumps(heavy))
"""


def test_service_never_imports_torch_or_worker():
    """Importing service.app, building the app and serving a job creation load no torch/worker module."""
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_keys_refuses_to_start(tmp_path):
    with pytest.raises(ConfigurationError, match="RELUSWAP_API_KEYS"):
        create_app(Settings(data_dir=tmp_path), queue=MemoryQueue())
    with pytest.raises(ConfigurationError):  # dev mode, but listening beyond loopback
        create_app(Settings(data_dir=tmp_path, dev_mode=True, host="0.0.0.0"), queue=MemoryQueue())


def test_dev_mode_on_loopback_runs_open(tmp_path):
    for host in ("127.0.0.1", "::1", "localhost"):
        create_app(Settings(data_dir=tmp_path, dev_mode=True, host=host), queue=MemoryQueue())
    app = create_app(Settings(data_dir=tmp_path, dev_mode=True), queue=MemoryQueue())
    with TestClient(app) as client:
        r = client.post("/finetune", json=valid_config())
        assert r.status_code == 202
        assert client.get(f"/jobs/{r.json()['id']}").status_code == 200


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RELUSWAP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RELUSWAP_API_KEYS", f"alice:k1, bob:sha256:{hash_key('k2')}")
    monkeypatch.setenv("RELUSWAP_ALLOWED_DATA_ROOTS", "/data/a,/data/b")
    monkeypatch.setenv("RELUSWAP_MAX_UPLOAD_BYTES", "1000")
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path / 'reluswap.db'}" and s.storage_dir == tmp_path / "storage"
    assert s.allowed_data_roots == [Path("/data/a"), Path("/data/b")] and s.max_upload_bytes == 1000
    assert s.queue == "gpu"
    keys = KeyRing(s)
    assert keys.owner("k1") == "alice" and keys.owner("k2") == "bob"  # pre-hashed keys work
    assert keys.owner("k3") is None and keys.owner(None) is None and keys.owner("") is None
    assert "k1" not in json.dumps(keys.digests)  # only digests are kept


@pytest.mark.parametrize("entry", ["nocolon", ":k", "a:", "a:sha256:xyz"])
def test_malformed_key_entries(tmp_path, entry):
    with pytest.raises(ConfigurationError):
        KeyRing(make_settings(tmp_path, api_keys=[entry]))
