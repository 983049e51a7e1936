"""ConvReLU forward+backward time and memory against Conv2d(ReLU(x)) at resnet50's 3x3 shapes.

    python bench/convrelu_conv.py                         # CPU, batch 8
    python bench/convrelu_conv.py --device cuda --dtype bfloat16   # batch 64: the GPU targets
    python bench/convrelu_conv.py --batch 4 --threads 1
    python bench/convrelu_conv.py --quick                 # seconds; the smoke test uses it

For each resnet50 stage's 3x3 conv (C -> C, stride 1, padding 1: 64@56, 128@28, 256@14, 512@7), the
baseline conv(relu(x)) and ConvReLU2d.from_conv(conv, impl=...) for impl in "unfold" (reference),
"shifted" (9 shifted 1x1 convs), "patches" (chunked thresholded patches, one GEMM per chunk, a
hand-written backward: convrelu_patches.py) and "fused" (the Triton implicit-GEMM kernels of
converters/kernels; reported as not available, with the reason, where they cannot run: on CPU, and
under TRITON_INTERPRET=1, which is a correctness tool, not a speed). x requires grad, as inside a network. Reports the median
forward+backward time, its ratio to the baseline, and memory (see --help of the README section):
CUDA: peak torch.cuda.max_memory_allocated above what was allocated before the step; every device:
bytes autograd saves for backward (torch.autograd.graph.saved_tensors_hooks, counted once per storage).
Prints one JSON object and writes bench/results/convrelu_conv-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from _bench_common import environment, median_seconds, now, stamp, sync, write_result
from torch import nn

from converters.activations import ConvReLU2d

STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]  # resnet50 3x3 convs: channels, spatial size
IMPLS = ["unfold", "shifted", "patches", "fused"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The targets, as ratios to conv(relu(x)) in the same run: (impl, device, dtype or None, time, memory)
TARGETS = [("fused", "cuda", "bfloat16", 1.5, 1.2), ("patches", "cpu", None, 3.0, None)]


def fused_unavailable(device: str, dtype: torch.dtype) -> str | None:
    """Why the fused impl cannot be timed here (ConvReLU2d would fall back to the exact path)."""
    from converters.activations.convrelu import fused_unavailable as library_reason

    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1: the interpreter checks correctness, it is not timed"
    return library_reason(torch.empty(1, 1, 1, 1, device=device, dtype=dtype))


def targets(rows: list[dict], device: str, dtype: str) -> list[dict]:
    out = []
    for impl, dev, want_dtype, time_max, mem_max in TARGETS:
        applies = device.startswith(dev) and want_dtype in (None, dtype)
        worst = [r[impl] for r in rows if r.get(impl, {}).get("available")]
        entry = {"impl": impl, "device": dev, "dtype": want_dtype or "any", "applies": applies and bool(worst),
                 "time_ratio_max": time_max}
        if worst:
            entry["worst_time_ratio"] = max(r["time_ratio_to_conv_relu"] for r in worst)
            entry["time_met"] = entry["worst_time_ratio"] <= time_max
            if mem_max is not None and all("peak_ratio_to_conv_relu" in r for r in worst):
                entry["peak_ratio_max"] = mem_max
                entry["worst_peak_ratio"] = max(r["peak_ratio_to_conv_relu"] for r in worst)
                entry["memory_met"] = entry["worst_peak_ratio"] <= mem_max
        out.append(entry)
    return out


def saved_tensor_bytes(step) -> int:
    """Bytes of the tensors autograd saves during one forward (counted once per storage).

    Includes saved parameters (the conv weight) and whatever an implementation keeps for backward;
    leaves out the output and temporaries freed during the forward. A CPU stand-in for peak memory."""
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), str(t.device))] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    del out
    return sum(seen.values())


def cuda_peak_bytes(step, device: str) -> int:
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def bench_module(forward, x, grad, device, warmup, repeats) -> dict:
    def step():
        x.grad = None
        forward(x).backward(grad)

    def forward_only():
        return forward(x)

    out = {"fwd_bwd_s": median_seconds(step, device, warmup, repeats, min_repeat_s=0.0),
           "saved_bytes": saved_tensor_bytes(forward_only)}
    if device.startswith("cuda"):
        out["peak_bytes"] = cuda_peak_bytes(step, device)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CPU, 64 on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="of x, the weight and theta (the GPU targets are for bfloat16)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 1, spatial sizes / 4 (smoke test)")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    batch = args.batch or (1 if args.quick else 64 if cuda else 8)
    stages = [(c, max(2, s // 4)) for c, s in STAGES] if args.quick else STAGES
    if args.quick:
        args.warmup, args.repeats = 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    dtype = DTYPES[args.dtype]

    started_at = now()
    torch.manual_seed(0)
    rows = []
    for channels, size in stages:
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(args.device, dtype)
        relu = nn.ReLU()
        x = torch.randn(batch, channels, size, size, device=args.device, dtype=dtype, requires_grad=True)
        grad = torch.randn(batch, channels, size, size, device=args.device, dtype=dtype)
        def pair(t, conv=conv, relu=relu):
            return conv(relu(t))

        # The baseline is timed before and after the impls; the faster of the two is used (the first
        # measurement can pay one-off costs, and other load on the machine comes and goes).
        base = bench_module(pair, x, grad, args.device, args.warmup, args.repeats)
        timed = {}
        for impl in impls:
            reason = fused_unavailable(args.device, dtype) if impl == "fused" else None
            if reason:
                timed[impl] = reason
                continue
            try:
                module = ConvReLU2d.from_conv(conv, init="identity", impl=impl)
            except (ValueError, NotImplementedError) as exc:
                timed[impl] = str(exc)
                continue
            timed[impl] = bench_module(module, x, grad, args.device, args.warmup, args.repeats)
        again = bench_module(pair, x, grad, args.device, args.warmup, args.repeats)
        before_after = [round(base["fwd_bwd_s"] * 1e3, 3), round(again["fwd_bwd_s"] * 1e3, 3)]
        base["fwd_bwd_s"] = min(base["fwd_bwd_s"], again["fwd_bwd_s"])
        entry = {
            "stage": f"{channels}@{size}",
            "shape": [batch, channels, size, size],
            "conv_relu": {"fwd_bwd_ms": round(base["fwd_bwd_s"] * 1e3, 3), "fwd_bwd_ms_before_after": before_after,
                          **{k: v for k, v in base.items() if k.endswith("bytes")}},
        }
        for impl, t in timed.items():
            if isinstance(t, str):
                entry[impl] = {"available": False, "reason": t}
                continue
            entry[impl] = {
                "available": True,
                "fwd_bwd_ms": round(t["fwd_bwd_s"] * 1e3, 3),
                # time / conv(relu(x)) time: 1.0 is as fast as the plain pair
                "time_ratio_to_conv_relu": round(t["fwd_bwd_s"] / base["fwd_bwd_s"], 3),
                **{k: v for k, v in t.items() if k.endswith("bytes")},
                "saved_ratio_to_conv_relu": round(t["saved_bytes"] / max(1, base["saved_bytes"]), 3),
            }
            if cuda:
                entry[impl]["peak_ratio_to_conv_relu"] = round(t["peak_bytes"] / max(1, base["peak_bytes"]), 3)
        rows.append(entry)
        print(f"{entry['stage']}: " + ", ".join(
            f"{k} {v['time_ratio_to_conv_relu']}x" if v["available"] else f"{k} n/a" for k, v in entry.items()
            if isinstance(v, dict) and "available" in v), file=sys.stderr)

    result = {
        "benchmark": "convrelu_conv",
        "started_at": stamp(started_at),
        "environment": environment(args.device),
        "batch": batch,
        "dtype": args.dtype,
        "conv": "Cin = Cout = C, 3x3, stride 1, padding 1, no bias; x requires grad",
        "baseline": "conv(relu(x)), timed before and after the impls; the faster median is used",
        "impls": impls,
        "memory": ("saved_bytes: bytes autograd saves for backward during one forward, once per storage "
                   "(saved_tensors_hooks), parameters included" + (
                       "; peak_bytes: torch.cuda.max_memory_allocated during forward+backward minus "
                       "memory allocated before it" if cuda else "")),
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "statistic": "median of repeats"},
        "quick": args.quick,
        "stages": rows,
        "targets": targets(rows, args.device, args.dtype),
    }
    write_result("convrelu_conv", result, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
