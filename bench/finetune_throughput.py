"""Fine-tuning throughput (images/s) of converted resnet50s against the unconverted ReLU model.

    python bench/finetune_throughput.py                          # CPU: batch 8, 64 px, eager (compile auto)
    python bench/finetune_throughput.py --device cuda            # batch 64, 224 px, amp auto (bf16), compiled
    python bench/finetune_throughput.py --quick                  # seconds; the smoke test uses it

Every variant trains in the same trainable mode (default bn+act: BatchNorm affine parameters and
running statistics plus the activation parameters; convolutions frozen), with the same optimizer
(the job's default Adam, lr 1e-3, cosine schedule), batch, image size, precision and compile
setting, on the same random batch resident on the device. The step is the worker's own:
worker.trainer.Trainer.train_batch (worker.trainer.train_step: autocast forward, fp32 cross-entropy,
backward, optimizer step; torch.compile of the model per train.compile, with its eager fallback),
followed by what the epoch loop does per step (scheduler step, loss and accuracy read back).
Data loading is not measured.

Variants (torchvision resnet50, random init, 1000 classes):
  original  the unconverted model: the baseline (ReLU, only BatchNorm trainable in bn+act)
  relu      convert(model, "relu", "all"): per-site ReLU modules in the traced graph, no parameter
            (a control: what the graph rewrite alone costs; no target)
  pvlu      convert(model, "pvlu", "all"): every ReLU site                     target >= 0.9x
  convrelu  convert(model, "convrelu", "block:first"): the first block's sites   target >= 0.8x

Timing runs in --rounds rounds (default 2) over all variants, kept in memory, the order reversed
each round (the baseline first, then last), and each variant's figure is its fastest round's
median step: load that comes and goes on the machine then hits every variant alike. Targets are
for GPU bf16; `targets.*.applies` says whether this run was such a run. Prints one JSON object and
writes it to bench/results/finetune_throughput-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time

import torch
from _bench_common import environment, now, stamp, sync, write_result
from torch.utils.data import TensorDataset

from converters.vocabulary import TRAINABLE_MODES
from service.contract import SWITCH_SETTINGS

VARIANTS = {  # name -> (activation, strategy); None: the unconverted model
    "original": None,
    "relu": ("relu", "all"),
    "pvlu": ("pvlu", "all"),
    "convrelu": ("convrelu", "block:first"),
}
TARGETS = {"pvlu": 0.9, "convrelu": 0.8}  # images/s as a fraction of the baseline's, GPU bf16
CLASSES = 1000


def build_model(name: str, arch: str, size: int, convrelu_impl: str | None):
    """The variant's model on the CPU (the caller moves it) and what the conversion did."""
    import torchvision

    from converters.conversion import convert

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=CLASSES)
    spec = VARIANTS[name]
    if spec is None:
        return model, {"activation": None, "strategy": None, "sites_replaced": 0}
    activation, strategy = spec
    model.eval()
    kwargs = {"convrelu_impl": convrelu_impl} if activation == "convrelu" and convrelu_impl else {}
    conversion = convert(model, activation, strategy, example_inputs=torch.randn(2, 3, size, size), **kwargs)
    return conversion.model, {"activation": activation, "strategy": strategy,
                              "sites_replaced": len(conversion.replaced), "sites_total": len(conversion.sites),
                              "added_parameters": conversion.added_parameters(), **kwargs}


class Run:
    """One variant: its model, trainer (the worker's Trainer) and timings."""

    def __init__(self, name: str, args, precision, x_cpu: torch.Tensor, y_cpu: torch.Tensor):
        from converters.training import trainable
        from service.job_config import TrainConfig
        from worker.progress import Reporter
        from worker.trainer import Trainer

        self.name = name
        started = time.perf_counter()
        model, self.conversion = build_model(name, args.model, args.size, args.convrelu_impl)
        self.conversion["build_seconds"] = round(time.perf_counter() - started, 3)
        model = model.to(precision.device)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        cfg = TrainConfig(trainable=args.trainable, batch_size=args.batch, max_steps=10 * (args.warmup + args.steps) + 10,
                          compile=args.compile, amp=args.amp, channels_last=args.channels_last)
        groups = trainable(model, cfg.trainable, cfg.weight_decay, cfg.threshold_l2)
        self.trainable_parameters = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
        self.logs: list[str] = []

        def on_event(event: dict) -> None:
            if event.get("type") == "log":
                self.logs.append(f"{event['level']}: {event['message']}")
                print(f"  [{name}] {event['level']}: {event['message']}", file=sys.stderr)

        one_batch = TensorDataset(x_cpu, y_cpu)
        self.trainer = Trainer(model, groups, one_batch, one_batch, cfg, precision, Reporter(on_event))
        self.trainer.model.train()
        self.x = precision.inputs(x_cpu)
        self.y = y_cpu.to(precision.device)
        self.device = str(precision.device)
        self.first_step_s: float | None = None

    def step(self) -> float:
        """What Trainer._epoch does per batch, minus records: step, scheduler, loss and accuracy read."""
        loss, out = self.trainer.train_batch(self.x, self.y)
        self.trainer.scheduler.step()
        value = float(loss.detach())
        int((out.detach().argmax(1) == self.y).sum())
        return value

    def resident_bytes(self) -> int:
        """Parameters, buffers, gradients and optimizer state of this variant (counted once per storage)."""
        tensors = [*self.trainer.model.parameters(), *self.trainer.model.buffers()]
        tensors += [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        tensors += [v for state in self.trainer.optimizer.state.values() for v in state.values()
                    if isinstance(v, torch.Tensor)]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t.is_cuda}
        return sum(storages.values())

    def measure(self, warmup: int, steps: int) -> dict:
        """warmup untimed steps (the very first compiles, when compiling), then `steps` timed one by one."""
        cuda = self.device.startswith("cuda")
        if self.first_step_s is None:  # first call: compile and first-touch costs, reported apart
            sync(self.device)
            start = time.perf_counter()
            self.step()
            sync(self.device)
            self.first_step_s = time.perf_counter() - start
            warmup -= 1
        for _ in range(max(0, warmup)):
            self.step()
        if cuda:
            sync(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for _ in range(steps):
            sync(self.device)
            start = time.perf_counter()
            loss = self.step()
            sync(self.device)
            times.append(time.perf_counter() - start)
        if not math.isfinite(loss):
            raise RuntimeError(f"{self.name}: the loss is {loss}")
        out = {"step_s": times}
        if cuda:
            # The other variants' models stay resident (rounds interleave them): count this one's
            # state plus what its steps allocate on top, i.e. about what it would peak at alone.
            out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(self.device) - before + self.resident_bytes()
        return out


def summarise(run: Run, rounds: list[dict], batch: int) -> dict:
    """The fastest round (by median step time) is the variant's figure; every round's images/s is kept."""
    per_round = [statistics.median(r["step_s"]) for r in rounds]
    best = min(range(len(rounds)), key=per_round.__getitem__)
    median = per_round[best]
    row = {
        "images_per_s": round(batch / median, 3),
        "step_ms_median": round(median * 1e3, 3),
        "step_ms_min": round(min(rounds[best]["step_s"]) * 1e3, 3),
        "images_per_s_by_round": [round(batch / m, 3) for m in per_round],
        "first_step_s": round(run.first_step_s or 0.0, 3),  # includes compiling when compiled
        "compile": dict(run.trainer.step_model.info),
        "conversion": run.conversion,
        "trainable_parameters": run.trainable_parameters,
    }
    if "peak_memory_bytes" in rounds[best]:
        row["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in rounds)
    if run.logs:
        row["logs"] = run.logs
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--model", default="resnet50", help="a torchvision resnet (default resnet50)")
    parser.add_argument("--batch", type=int, help="default 8 on CPU, 64 on CUDA")
    parser.add_argument("--size", type=int, help="image size; default 64 on CPU, 224 on CUDA")
    parser.add_argument("--steps", type=int, help="timed steps per variant; default 10 on CPU, 30 on CUDA")
    parser.add_argument("--warmup", type=int, help="untimed steps first (the first compiles); default 3 on CPU, "
                        "10 on CUDA")
    parser.add_argument("--rounds", type=int, help="timing rounds over all variants (default 2; 1 with --quick)")
    parser.add_argument("--compile", choices=SWITCH_SETTINGS, default="auto",
                        help="train.compile: auto (on CUDA, eager on CPU), on, off")
    parser.add_argument("--amp", choices=SWITCH_SETTINGS, default="auto",
                        help="train.amp: mixed precision on CUDA (bf16 where supported, else fp16)")
    parser.add_argument("--channels-last", choices=SWITCH_SETTINGS, default="auto", help="train.channels_last")
    parser.add_argument("--trainable", choices=TRAINABLE_MODES, default="bn+act")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, from " + ", ".join(VARIANTS) + " (original, the baseline, always runs)")
    parser.add_argument("--convrelu-impl", help="ConvReLU2d impl (default: convert's)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="32 px, batch 2, 1 warmup and 2 timed steps, 1 round (smoke test)")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.quick:
        args.batch, args.size, args.steps, args.warmup = args.batch or 2, args.size or 32, args.steps or 2, args.warmup or 1
        args.rounds = args.rounds or 1
    args.rounds = args.rounds or 2
    args.batch = args.batch or (64 if cuda else 8)
    args.size = args.size or (224 if cuda else 64)
    args.steps = args.steps or (30 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    if min(args.batch, args.size, args.steps, args.rounds) < 1 or args.warmup < 1:
        parser.error("--batch, --size, --steps, --rounds and --warmup must be >= 1")
    if args.batch < 2 and args.trainable != "act":
        parser.error("--batch must be >= 2: BatchNorm trains on batch statistics")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; accepted: {', '.join(VARIANTS)}")
    candidates = [n for n in VARIANTS if n in names and n != "original"]
    if args.threads:
        torch.set_num_threads(args.threads)

    from worker.compiling import resolve_compile
    from worker.precision import Precision

    started_at = now()
    device = torch.device(args.device)
    precision = Precision.choose(device, args.amp, args.channels_last)
    torch.manual_seed(0)
    x_cpu = torch.randn(args.batch, 3, args.size, args.size)
    y_cpu = torch.randint(0, CLASSES, (args.batch,))

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    # Rounds: every variant timed once per round, the order reversed from one round to the next, so
    # the baseline runs first and last and load that comes and goes on the machine hits all variants.
    runs = []
    for name in ["original", *candidates]:
        log(f"{name}: building ({args.model}, batch {args.batch}, {args.size} px, {precision.describe()})")
        runs.append(Run(name, args, precision, x_cpu, y_cpu))
    timed: dict[str, list[dict]] = {run.name: [] for run in runs}
    for index in range(args.rounds):
        for run in runs if index % 2 == 0 else runs[::-1]:
            log(f"round {index + 1}/{args.rounds}: {run.name}")
            timed[run.name].append(run.measure(args.warmup if index == 0 else 1, args.steps))
    results = {run.name: summarise(run, timed[run.name], args.batch) for run in runs}
    base, rows = results["original"], {n: r for n, r in results.items() if n != "original"}
    del runs
    gc.collect()

    gpu_bf16 = cuda and precision.amp_dtype == torch.bfloat16
    for row in rows.values():
        row["throughput_ratio"] = round(row["images_per_s"] / base["images_per_s"], 4)  # 1.0: as fast; 0.5: half
        if "peak_memory_bytes" in row:
            row["peak_memory_ratio"] = round(row["peak_memory_bytes"] / base["peak_memory_bytes"], 4)
    targets = {
        name: {"min_throughput_ratio": minimum, "throughput_ratio": rows[name]["throughput_ratio"],
               "pass": rows[name]["throughput_ratio"] >= minimum,
               # The targets are for a GPU in bf16: elsewhere pass/fail is shown, not claimed.
               "applies": gpu_bf16}
        for name, minimum in TARGETS.items() if name in rows
    }

    result = {
        "benchmark": "finetune_throughput",
        "started_at": stamp(started_at),
        "environment": environment(args.device),
        "model": f"torchvision:{args.model}",
        "weights": "none (random init)",
        "classes": CLASSES,
        "batch": args.batch,
        "image_size": args.size,
        "input_shape": list(x_cpu.shape),
        "trainable": args.trainable,
        "optimizer": "adam, lr 0.001, cosine schedule (the job defaults)",
        "precision": precision.describe(),
        "compile": {"setting": args.compile, "enabled": resolve_compile(args.compile, device)},
        "step": ("worker.trainer.Trainer.train_batch (train_step; torch.compile per train.compile) + scheduler step "
                 "+ loss and accuracy read back; the batch stays on the device (no data loading)"),
        "baseline": "original (unconverted, ReLU), in the same rounds as the others",
        "timing": {"warmup": args.warmup, "steps": args.steps, "rounds": args.rounds,
                   "statistic": ("images/s = batch / median step time of the variant's fastest round; each step "
                                 "synchronised; rounds interleave the variants (order reversed each round)")},
        "quick": args.quick,
        "results": results,
        "targets": targets,
        "targets_apply": gpu_bf16,
    }
    write_result("finetune_throughput", result, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
