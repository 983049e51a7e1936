"""A bounded load run against a local reluswap API: fixed concurrency, fixed time, a request cap.

    python bench/api_load.py --start-embedded --seconds 5
    python bench/api_load.py --url http://127.0.0.1:8000 --api-key KEY --concurrency 8 --seconds 10

Each of --concurrency clients sends one request at a time, cycling through the read routes:
GET /jobs (listing), GET /jobs/{id} (ids from the listing, and any created with --create N),
GET /healthz, GET /activations. Prints one JSON object (latency percentiles, throughput, errors,
per route) and writes it to bench/results/api_load-<timestamp>.json. Refuses non-loopback URLs.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
# A small job, for --create only: with a worker running it really trains (CPU or GPU).
SMALL_JOB = {
    "model": {"arch": "torchvision:resnet18", "num_classes": 10, "weights": "none"},
    "dataset": {"uri": "builtin:digits", "image_size": 32},
    "activation": "pvlu",
    "train": {"epochs": 1, "max_steps": 2},
    "metadata": {"source": "bench/api_load.py"},
}


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 and ::1
    except ValueError:
        return False


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: list[tuple[str, float, bool]], elapsed: float) -> dict:
    def stats(rows):
        latencies = sorted(ms for _, ms, _ in rows)
        return {
            "requests": len(rows),
            "errors": sum(1 for _, _, ok in rows if not ok),
            "p50_ms": _round(percentile(latencies, 50)),
            "p99_ms": _round(percentile(latencies, 99)),
            "max_ms": _round(latencies[-1] if latencies else None),
            "throughput_rps": round(len(rows) / elapsed, 1) if elapsed > 0 else None,
        }

    routes = sorted({route for route, _, _ in samples})
    return {**stats(samples), "per_route": {r: stats([s for s in samples if s[0] == r]) for r in routes}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def create_jobs(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        key = f"bench-{time.time_ns()}-{i}"
        response = await client.post("/finetune", json=SMALL_JOB, headers={"Idempotency-Key": key})
        if response.status_code != 202:
            raise SystemExit(f"POST /finetune answered {response.status_code}: {response.text[:300]}")
        ids.append(response.json()["id"])
    return ids


async def cancel_jobs(client: httpx.AsyncClient, ids: list[str]) -> None:
    for job_id in ids:
        with contextlib.suppress(httpx.HTTPError):
            await client.post(f"/jobs/{job_id}/cancel")  # 409 once it ended: fine


async def run_load(url: str, api_key: str | None, concurrency: int, seconds: float, max_requests: int | None,
                   create: int, warmup: float) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0) as client:
        created = await create_jobs(client, create) if create else []
        listing = await client.get("/jobs", params={"limit": 100})
        listing.raise_for_status()
        existing = [job["id"] for job in listing.json()["data"]]
        job_ids = list(dict.fromkeys(created + existing))

        routes = [("GET /jobs", lambda i: "/jobs?limit=20"),
                  ("GET /healthz", lambda i: "/healthz"),
                  ("GET /activations", lambda i: "/activations")]
        if job_ids:
            routes.insert(1, ("GET /jobs/{id}", lambda i: f"/jobs/{job_ids[i % len(job_ids)]}"))

        samples: list[tuple[str, float, bool]] = []
        issued = 0
        recording = False

        async def client_loop(offset: int, deadline: float) -> None:
            nonlocal issued
            i = offset
            while time.perf_counter() < deadline:
                if recording:
                    if max_requests is not None and issued >= max_requests:
                        return
                    issued += 1
                route, path = routes[i % len(routes)]
                start = time.perf_counter()
                try:
                    ok = (await client.get(path(i // len(routes)))).status_code < 400
                except httpx.HTTPError:
                    ok = False
                if recording:
                    samples.append((route, (time.perf_counter() - start) * 1000, ok))
                i += 1

        if warmup > 0:  # connections opened, first-request costs paid; not recorded
            deadline = time.perf_counter() + warmup
            await asyncio.gather(*(client_loop(c, deadline) for c in range(concurrency)))
        recording = True
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client_loop(c, deadline) for c in range(concurrency)))
        elapsed = time.perf_counter() - started

        if created:
            await cancel_jobs(client, created)

    return {
        **summarize(samples, elapsed),
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requested_seconds": seconds,
        "max_requests": max_requests,
        "jobs_in_rotation": len(job_ids),
        "created_jobs": len(created),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the API, on loopback only (or use --start-embedded)")
    parser.add_argument("--api-key", default=os.environ.get("RELUSWAP_API_KEY"),
                        help="bearer key (default: $RELUSWAP_API_KEY)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients, each with one request in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="stop after this many measured requests")
    parser.add_argument("--create", type=int, default=0, metavar="N",
                        help="first create N small jobs with POST /finetune and poll them too (they run if a "
                             "worker is up; cancelled at the end)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before measuring")
    parser.add_argument("--start-embedded", action="store_true",
                        help="start redis, the API and a worker (reluswap.supervisor) in a temp dir, "
                             "stop them at the end")
    args = parser.parse_args(argv)

    if args.concurrency < 1 or args.seconds <= 0 or args.create < 0 or args.warmup < 0:
        parser.error("--concurrency >= 1, --seconds > 0, --create >= 0 and --warmup >= 0")
    if args.max_requests is not None and args.max_requests < 1:
        parser.error("--max-requests must be >= 1")
    if args.start_embedded and args.url:
        parser.error("--url and --start-embedded exclude each other")
    if not args.start_embedded:
        if not args.url:
            parser.error("give --url (a local server) or --start-embedded")
        if not is_loopback_url(args.url):
            print(f"refusing {args.url}: only loopback (127.0.0.0/8, ::1, localhost) may be load-tested",
                  file=sys.stderr)
            return 2

    started_at = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        url, api_key, deployment = args.url, args.api_key, "external"
        if args.start_embedded:
            from reluswap.supervisor import start_embedded

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="reluswap-bench-"))
            embedded = start_embedded(tmp)
            stack.callback(embedded.stop)
            url, api_key, deployment = embedded.url, embedded.api_key, "embedded"
        result = asyncio.run(run_load(url, api_key, args.concurrency, args.seconds, args.max_requests,
                                      args.create, args.warmup))

    result = {**result, "url": url, "deployment": deployment,
              "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"api_load-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0 if result["requests"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
