"""Helpers shared by the speed benchmarks: environment record, timing, results file.

Not a benchmark itself. The scripts import it as a sibling module (they are run as
`python bench/<name>.py`, which puts bench/ on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

# $RELUSWAP_BENCH_RESULTS overrides the folder (the smoke test writes to a temp dir).
RESULTS = Path(os.environ.get("RELUSWAP_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def environment(device: str = "cpu") -> dict:
    """Versions, device and thread counts: what a number depends on."""
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: str = "cpu", warmup: int = 2, repeats: int = 5,
                   min_repeat_s: float = 0.01) -> float:
    """Median over `repeats` of the mean time of one call, after `warmup` untimed calls.

    Each repeat runs fn `number` times back to back (number is chosen from the last warmup call so a
    repeat lasts at least min_repeat_s), which keeps timer and launch overhead small for tiny calls.
    The device is synchronised before and after each repeat."""
    for _ in range(max(0, warmup - 1)):  # first calls: compilation, allocator, kernel selection
        fn()
    sync(device)
    start = time.perf_counter()  # the last warmup call sizes `number`
    fn()
    sync(device)
    per_call = time.perf_counter() - start
    number = max(1, int(min_repeat_s / per_call) if per_call > 0 else 1)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def write_result(name: str, result: dict, started_at: datetime) -> Path:
    """Print the JSON to stdout and write it to bench/results/<name>-<UTC timestamp>.json
    (or under $RELUSWAP_BENCH_RESULTS)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return out


def now() -> datetime:
    return datetime.now(UTC)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_size(text: str) -> int:
    """'64KB', '16MB', '1GB' (binary units) or a plain byte count -> bytes."""
    s = text.strip().upper()
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s)
