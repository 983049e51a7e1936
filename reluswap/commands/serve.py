"""`reluswap serve`: the embedded deployment (bundled redis-server, API, one worker) until Ctrl-C."""

from __future__ import annotations

import signal
import threading


def add(sub) -> None:
    p = sub.add_parser("serve", help="run redis, the API and one worker on this machine")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default="reluswap-data", help="SQLite database, storage, redis files, logs")
    p.set_defaults(run=run)


def run(args) -> int:
    from reluswap.supervisor import start_embedded

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    embedded = start_embedded(args.data_dir, host=args.host, port=args.port)
    print(f"reluswap is serving at {embedded.url}", flush=True)
    print(f"API key (owner 'local'): {embedded.api_key}", flush=True)
    print(f"try: curl -H 'Authorization: Bearer {embedded.api_key}' {embedded.url}/jobs", flush=True)
    try:
        while not stop.wait(1.0):
            for name, process in embedded.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping", flush=True)
                    stop.set()
    finally:
        embedded.stop()
    print("stopped", flush=True)
    return 0
