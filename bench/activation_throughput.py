"""Forward and forward+backward throughput of each activation against torch.relu on the same tensors.

    python bench/activation_throughput.py                      # eager, 1MB,16MB,128MB, CPU
    python bench/activation_throughput.py --sizes 16MB,1GB --device cuda --compile
    python bench/activation_throughput.py --quick              # seconds; the smoke test uses it

For every size, an (N, 64, 32, 32) float32 tensor of about that many bytes (smaller sizes shrink
H = W) goes through torch.relu (the baseline) and through each activation built with
converters.activations.create_activation(name, 64, init="paper"). Eager always; with --compile also
torch.compile of each (the baseline compiled too). Reports GB/s under a simple traffic model and the
ratio of each time to torch.relu's in the same run and mode, and as a fraction of the memory bandwidth a
plain copy (x.clone()) reaches on the same tensor in the same run: the issue's target is >= 0.8 for the
compiled activations on 1 GB tensors on a GPU (reported under "targets"). Prints one JSON object and writes it to
bench/results/activation_throughput-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from _bench_common import environment, median_seconds, now, parse_size, stamp, write_result

from converters.activations import create_activation

ACTIVATIONS = ["relu", "leaky_relu", "prelu", "pvlu", "frelu", "dprelu", "dualline", "adarelu"]
CHANNELS = 64
MAX_BYTES = 1 << 30
# Bytes moved per element, in units of one float32 (4 bytes): forward reads x and writes y (2);
# backward reads grad_y and the saved tensor and writes grad_x (3). Parameter traffic is ignored.
FWD_TENSORS = 2
BWD_TENSORS = 3


def shape_for(nbytes: int) -> tuple[int, int, int, int]:
    numel = max(1, nbytes // 4)
    per_sample = CHANNELS * 32 * 32
    if numel >= per_sample:
        return (max(1, round(numel / per_sample)), CHANNELS, 32, 32)
    side = max(1, math.isqrt(numel // CHANNELS))
    return (1, CHANNELS, side, side)


def measure(fn, x: torch.Tensor, grad: torch.Tensor, device: str, warmup: int, repeats: int,
            min_repeat_s: float) -> dict:
    def forward():
        with torch.no_grad():
            fn(x)

    def forward_backward():
        x.grad = None
        fn(x).backward(grad)

    return {
        "fwd_s": median_seconds(forward, device, warmup, repeats, min_repeat_s),
        "fwd_bwd_s": median_seconds(forward_backward, device, warmup, repeats, min_repeat_s),
    }


BANDWIDTH_TARGET = 0.8  # of the copy's GB/s, compiled, 1 GB, CUDA


def copy_gbps(x: torch.Tensor, device: str, warmup: int, repeats: int, min_repeat_s: float) -> float:
    """GB/s of x.clone() (read x, write a copy): the bandwidth an elementwise kernel can hope for."""
    with torch.no_grad():
        seconds = median_seconds(x.clone, device, warmup, repeats, min_repeat_s)
    return 2 * x.numel() * x.element_size() / seconds / 1e9


def row(t: dict, base: dict, numel: int, copy: float) -> dict:
    fwd_bytes = FWD_TENSORS * 4 * numel
    all_bytes = (FWD_TENSORS + BWD_TENSORS) * 4 * numel
    return {
        "fwd_bandwidth_fraction": round(fwd_bytes / t["fwd_s"] / 1e9 / copy, 3),
        "fwd_bwd_bandwidth_fraction": round(all_bytes / t["fwd_bwd_s"] / 1e9 / copy, 3),
        "fwd_ms": round(t["fwd_s"] * 1e3, 4),
        "fwd_bwd_ms": round(t["fwd_bwd_s"] * 1e3, 4),
        "fwd_gbps": round(fwd_bytes / t["fwd_s"] / 1e9, 3),
        "fwd_bwd_gbps": round(all_bytes / t["fwd_bwd_s"] / 1e9, 3),
        # time / relu time: 1.0 is as fast as ReLU, 3.0 is three times slower
        "fwd_ratio_to_relu": round(t["fwd_s"] / base["fwd_s"], 3),
        "fwd_bwd_ratio_to_relu": round(t["fwd_bwd_s"] / base["fwd_bwd_s"], 3),
    }


def bandwidth_target(results: list[dict], names: list[str], device: str) -> dict:
    """The issue's target: every compiled activation moves >= 80% of the copy's bandwidth at 1 GB."""
    target = {"what": f"compiled fwd and fwd_bwd bandwidth_fraction >= {BANDWIDTH_TARGET} at 1 GB on CUDA",
              "applies": False}
    big = [e for e in results if e["requested_bytes"] >= MAX_BYTES and "compiled" in e["modes"]]
    if not big or not device.startswith("cuda"):
        target["why_not"] = "needs --device cuda --compile --sizes ...,1GB"
        return target
    rows = big[-1]["modes"]["compiled"]
    worst = {name: min(rows[name]["fwd_bandwidth_fraction"], rows[name]["fwd_bwd_bandwidth_fraction"])
             for name in names}
    return {**target, "applies": True, "worst_fraction": worst, "met": min(worst.values()) >= BANDWIDTH_TARGET}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1MB,16MB,128MB", help="tensor sizes, comma-separated (max 1GB)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of each (slow on CPU)")
    parser.add_argument("--activations", default=",".join(ACTIVATIONS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    args = parser.parse_args(argv)

    if args.quick:
        args.sizes, args.warmup, args.repeats = "64KB,256KB", 1, 3
    min_repeat_s = 0.002 if args.quick else 0.02
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if any(s <= 0 or s > MAX_BYTES for s in sizes):
        parser.error("each size must be in (0, 1GB]")
    names = [n.strip() for n in args.activations.split(",") if n.strip()]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)

    started_at = now()
    modes = ["eager"] + (["compiled"] if args.compile else [])
    results = []
    torch.manual_seed(0)
    for nbytes in sizes:
        shape = shape_for(nbytes)
        numel = math.prod(shape)
        x = torch.randn(shape, device=args.device, requires_grad=True)
        grad = torch.randn(shape, device=args.device)
        copy = copy_gbps(x.detach(), args.device, args.warmup, args.repeats, min_repeat_s)
        entry = {"requested_bytes": nbytes, "shape": list(shape), "bytes": numel * 4,
                 "copy_gbps": round(copy, 3), "modes": {}}
        for mode in modes:
            wrap = (lambda f: torch.compile(f, dynamic=False)) if mode == "compiled" else (lambda f: f)
            relu = wrap(torch.relu)
            # The baseline is timed before and after the activations; the faster of the two is used
            # (a first measurement can pay one-off costs, and other load on the machine comes and goes).
            first = measure(relu, x, grad, args.device, args.warmup, args.repeats, min_repeat_s)
            timed = {}
            for name in names:
                module = create_activation(name, CHANNELS, init="paper").to(args.device)
                timed[name] = measure(wrap(module), x, grad, args.device, args.warmup, args.repeats, min_repeat_s)
            last = measure(relu, x, grad, args.device, args.warmup, args.repeats, min_repeat_s)
            base_t = {k: min(first[k], last[k]) for k in first}
            per_mode = {"torch.relu": {**row(base_t, base_t, numel, copy),
                                       "fwd_bwd_ms_before_after": [round(first["fwd_bwd_s"] * 1e3, 4),
                                                                   round(last["fwd_bwd_s"] * 1e3, 4)]}}
            per_mode.update({name: row(t, base_t, numel, copy) for name, t in timed.items()})
            entry["modes"][mode] = per_mode
        results.append(entry)
        del x, grad

    result = {
        "benchmark": "activation_throughput",
        "started_at": stamp(started_at),
        "environment": environment(args.device),
        "dtype": "float32",
        "modes": modes,
        "activations": names,
        "baseline": "torch.relu, timed before and after the activations; the faster median is used",
        "traffic_model": (f"fwd: {FWD_TENSORS} x 4 B/elem (read x, write y); fwd_bwd adds {BWD_TENSORS} x 4 "
                          "B/elem (read grad_y, read saved tensor, write grad_x); parameters ignored"),
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "statistic": "median of repeats",
                   "min_repeat_s": min_repeat_s},
        "quick": args.quick,
        "results": results,
        "targets": [bandwidth_target(results, names, args.device)],
    }
    write_result("activation_throughput", result, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
