"""onnxruntime CPU latency of converted resnets against the export of the unconverted model.

    python bench/onnx_latency.py                              # resnet18,resnet50; batch 1,8; 224
    python bench/onnx_latency.py --models resnet18 --runs 20 --threads 2
    python bench/onnx_latency.py --quick                      # seconds; the smoke test uses it

For each torchvision model (random weights; latency does not depend on them): the original, exported
with converters.export.to_onnx (torch.onnx.export(dynamo=True), opset 18, dynamic batch: no custom ops
since nothing is converted), and each variant converted then exported the same way:
  pvlu      converters.convert(model, "pvlu", strategy="all")              every ReLU site -> PVLU node
  convrelu  converters.convert(model, "convrelu", strategy="block:first")  the first block's ReLU sites
                                                                         -> ConvReLU (model-local function)
Each file runs in an onnxruntime CPUExecutionProvider session (default graph optimisations); latency is
the median wall time of session.run over --runs runs after --warmup runs, at each batch size. The ratio
is variant / original at the same model and batch, measured in the same run. Prints one JSON object and
writes bench/results/onnx_latency-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from _bench_common import environment, now, stamp, write_result

from converters import convert
from converters.export import to_onnx
from converters.export.onnx_export import save_onnx

VARIANTS = {"pvlu": ("pvlu", "all"), "convrelu": ("convrelu", "block:first")}


def build(model_name: str, variant: str | None, image_size: int) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    if variant is None:
        return model, 0
    activation, strategy = VARIANTS[variant]
    x = torch.randn(2, 3, image_size, image_size)
    conversion = convert(model, activation, strategy=strategy, example_inputs=x)
    return conversion.model.eval(), len(conversion.replaced)


def latency_ms(session: ort.InferenceSession, feed: dict, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per file and batch (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--keep", type=Path, default=None, help="write the .onnx files here instead of a temp dir")
    parser.add_argument("--quick", action="store_true", help="resnet18, 32x32, batch 1 and 2, 3 runs (smoke test)")
    args = parser.parse_args(argv)

    if args.quick:
        args.models, args.batches, args.image_size, args.runs, args.warmup = "resnet18", "1,2", 32, 3, 1
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3

    started_at = now()
    rows = []
    with tempfile.TemporaryDirectory(prefix="reluswap-onnx-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for model_name in models:
            entry = {"model": model_name, "files": {}, "latency_ms": {}, "ratio_to_original": {}}
            sessions = {}
            for variant in [None, *variants]:
                key = variant or "original"
                model, replaced = build(model_name, variant, args.image_size)
                start = time.perf_counter()
                proto = to_onnx(model, torch.randn(1, 3, args.image_size, args.image_size))
                path = save_onnx(proto, folder / f"{model_name}-{key}.onnx")
                export_s = time.perf_counter() - start
                custom = sorted({n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "reluswap"})
                entry["files"][key] = {"bytes": path.stat().st_size, "replaced_sites": replaced,
                                       "custom_ops": custom, "export_s": round(export_s, 2)}
                sessions[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for batch in batches:
                feed_x = np.random.default_rng(0).standard_normal(
                    (batch, 3, args.image_size, args.image_size), dtype=np.float32)
                lat = {}
                for key, session in sessions.items():
                    feed = {session.get_inputs()[0].name: feed_x}
                    lat[key] = latency_ms(session, feed, args.warmup, args.runs)
                entry["latency_ms"][str(batch)] = {k: round(v, 3) for k, v in lat.items()}
                entry["ratio_to_original"][str(batch)] = {
                    k: round(v / lat["original"], 3) for k, v in lat.items() if k != "original"}
                print(f"{model_name} batch {batch}: " + ", ".join(
                    f"{k} {v:.2f} ms" for k, v in lat.items()), file=sys.stderr)
            rows.append(entry)

    result = {
        "benchmark": "onnx_latency",
        "started_at": stamp(started_at),
        "environment": {**environment("cpu"), "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                        "torchvision": torchvision.__version__, "provider": "CPUExecutionProvider",
                        "ort_intra_op_threads": args.threads},
        "image_size": args.image_size,
        "batches": batches,
        "variants": {v: {"activation": VARIANTS[v][0], "strategy": VARIANTS[v][1]} for v in variants},
        "baseline": "original (unconverted model, same export path)",
        "timing": {"warmup": args.warmup, "runs": args.runs, "statistic": "median of session.run wall times"},
        "quick": args.quick,
        "results": rows,
    }
    write_result("onnx_latency", result, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
