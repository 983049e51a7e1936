"""Wall time of one compare job on the embedded deployment with 1 worker and with 2 workers.

    python bench/compare_scaling.py                # resnet18 on builtin:digits, 32 px, 7 children
    python bench/compare_scaling.py --workers 1,2,4 --seeds 3
    python bench/compare_scaling.py --quick        # synthetic data, 16 px, 3 children (the smoke test)

For each worker count a fresh embedded deployment (reluswap.supervisor.start_embedded: a real
redis-server, the API under uvicorn, N Celery workers each running one job at a time, SQLite) runs
the same compare job (POST /compare, JSON, random weights from the fixed init seed, no upload); the
figure is the wall time from the POST to the compare ending, seen by polling GET /compare/{id}
every 0.25 s. The deployment's start-up is not timed. The children of a compare are ordinary jobs:
the original first (alone: every other child waits for its measurement), then every (arm, seed),
which the workers take in parallel. So the ideal ratio (N workers / 1) is about
(t_original + t_rest / N) / (t_original + t_rest), and on a CPU machine it is bounded by the cores
the workers share. Prints one JSON object and writes it to
bench/results/compare_scaling-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's reluswap, service and worker, not an installed copy
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from _bench_common import environment, now, stamp, write_result  # noqa: E402

ENDED = ("succeeded", "failed", "cancelled")
POLL_S = 0.25


def compare_body(quick: bool, activations: list[str], seeds: int, max_steps: int) -> dict:
    dataset = ({"uri": "synthetic:4x48", "image_size": 16, "val_split": 0.25} if quick
               else {"uri": "builtin:digits", "image_size": 32, "val_split": 0.1})
    return {
        "model": {"arch": "torchvision:resnet18", "num_classes": 4 if quick else 10, "weights": "none"},
        "dataset": dataset,
        "activations": activations,
        "strategies": ["all"],
        "seeds": seeds,
        "test_split": 0.25 if quick else 0.1,
        "train": {"epochs": 1, "batch_size": 32, "max_steps": max_steps, "stats_batches": 1, "seed": 0},
        "export": {"onnx": False, "pt2": False},
        "metadata": {"source": "bench/compare_scaling.py"},
    }


def _seconds(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    return (datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def run_once(workers: int, body: dict, timeout_s: float) -> dict:
    """One fresh deployment with `workers` workers; the compare's wall time and its children."""
    from reluswap.supervisor import start_embedded

    with tempfile.TemporaryDirectory(prefix="reluswap-bench-compare-") as tmp:
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        t0 = time.perf_counter()
        embedded = start_embedded(tmp, workers=workers, extra_env={"PYTHONPATH": pythonpath})
        startup_s = time.perf_counter() - t0
        try:
            with httpx.Client(base_url=embedded.url, timeout=60,
                              headers={"Authorization": f"Bearer {embedded.api_key}"}) as client:
                print(f"{workers} worker(s): deployment up in {startup_s:.1f} s, posting the compare",
                      file=sys.stderr)
                start = time.perf_counter()
                r = client.post("/compare", json=body)
                r.raise_for_status()
                compare_id = r.json()["id"]
                deadline = start + timeout_s
                while True:
                    compare = client.get(f"/compare/{compare_id}").json()
                    if compare["status"] in ENDED:
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"compare {compare_id} did not end within {timeout_s:.0f} s "
                                           f"({compare['progress']})")
                    time.sleep(POLL_S)
                wall = time.perf_counter() - start
                kids = client.get("/jobs", params={"compare_id": compare_id, "limit": 100}).json()["data"]
                nodes = set()
                for kid in kids:
                    events = client.get(f"/jobs/{kid['id']}/events", params={"limit": 100}).json()["data"]
                    nodes |= {e["data"]["worker"].rsplit(":", 2)[0] for e in events
                              if e["type"] == "status" and "worker" in (e.get("data") or {})}
        finally:
            embedded.stop(timeout=30)
    durations = [_seconds(k["started_at"], k["finished_at"]) for k in kids]
    original = next(k for k in kids if k["arm"] == "original")
    child_s = sum(d for d in durations if d is not None)
    print(f"{workers} worker(s): {compare['status']} in {wall:.1f} s ({len(kids)} children)", file=sys.stderr)
    return {
        "workers": workers,
        "status": compare["status"],
        "wall_s": round(wall, 3),
        "startup_s": round(startup_s, 3),
        "children": len(kids),
        "children_status": {s: sum(k["status"] == s for k in kids) for s in sorted({k["status"] for k in kids})},
        "original_s": _seconds(original["started_at"], original["finished_at"]),
        "child_seconds_sum": round(child_s, 3),
        # Children running at once on average (sum of child run times / wall): 1.0 is serial.
        "mean_concurrency": round(child_s / wall, 3) if wall > 0 else None,
        "workers_seen": len(nodes),
        "winner": (compare.get("winner") or {}).get("arm"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts; the first is the "
                        "reference of the ratios (default 1,2)")
    parser.add_argument("--activations", default=None, help="default pvlu,frelu (pvlu with --quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 2; 1 with --quick)")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps per child (default 4; 1 "
                        "with --quick)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one compare may take")
    parser.add_argument("--quick", action="store_true",
                        help="synthetic 4x48 data at 16 px, 1 activation, 1 seed, 1 step (smoke test)")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not counts or min(counts) < 1:
        parser.error("--workers: one or more counts >= 1")
    activations = (args.activations or ("pvlu" if args.quick else "pvlu,frelu")).split(",")
    seeds = args.seeds or (1 if args.quick else 2)
    max_steps = args.max_steps or (1 if args.quick else 4)
    body = compare_body(args.quick, activations, seeds, max_steps)

    started_at = now()
    runs = [run_once(w, body, args.timeout) for w in counts]
    reference = runs[0]
    ratios = {str(r["workers"]): round(r["wall_s"] / reference["wall_s"], 3) for r in runs}
    result = {
        "benchmark": "compare_scaling",
        "started_at": stamp(started_at),
        "environment": environment("cpu"),
        "deployment": "embedded (reluswap.supervisor.start_embedded): redis-server, uvicorn, N Celery prefork "
                      "workers (concurrency 1 each), SQLite; one fresh deployment per worker count",
        "compare": body,
        "children": reference["children"],
        "timing": {"statistic": "wall seconds from POST /compare to the compare ending (GET /compare polled "
                                f"every {POLL_S} s), one run per worker count; deployment start-up not timed"},
        "quick": args.quick,
        "runs": runs,
        "wall_ratio_to_first": ratios,
        # The figure asked for: wall time with 2 workers / with 1 (below 1 is faster).
        "ratio_2_to_1": ratios.get("2") if counts[0] == 1 else None,
    }
    write_result("compare_scaling", result, started_at)
    return 0 if all(r["status"] == "succeeded" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
