"""Fixtures of the service tests: a real temporary PostgreSQL cluster, a real redis-server, and an
API app on a SQLite file in tmp_path.

Nothing here imports torch: the service must run without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from service_helpers import PG_BIN, Api, _as_postgres, free_port, make_settings

_db_counter = iter(range(1_000_000))  # one database name per test


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway cluster on a free 127.0.0.1 port: (host, port). Skips when PostgreSQL is absent."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found under {PG_BIN}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    base = Path(tempfile.mkdtemp(prefix="reluswap-pg-"))  # not under pytest's 0700 root-only tmp
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    run = dict(check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
                                     "-D", str(data)]), **run)
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                                     "-l", str(base / "log"), "-w", "start"]), **run)
    except subprocess.CalledProcessError as err:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err.stderr.decode(errors='replace')[-500:]}")
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database in the session's cluster (CREATE DATABASE from template0 takes ~50 ms)."""
    import psycopg

    host, port = postgres_server
    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@{host}:{port}/{name}"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each store test runs on a SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def redis_url():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def api(tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.queue import MemoryQueue

    settings = make_settings(tmp_path)
    queue = MemoryQueue()
    app = create_app(settings, queue=queue)
    with TestClient(app) as client:
        yield Api(client, app, app.state.store, app.state.storage, queue, settings, tmp_path)
