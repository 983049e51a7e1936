"""`reluswap finetune`: the fine-tuning job in-process, with a progress bar and a summary table."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from converters.catalog import ACTIVATIONS
from converters.vocabulary import FALLBACKS, GRANULARITIES, INITS, TRAINABLE_MODES

from ._jobargs import (
    add_model_data,
    add_training,
    model_data_config,
    overlay,
    read_config_file,
    training_config,
)
from ._progress import CancelOnInterrupt, ProgressView


def add(sub) -> None:
    p = sub.add_parser("finetune", help="convert a model's ReLUs and fine-tune the new activations")
    p.add_argument("--config", help="a job config as JSON (the POST /finetune body); flags override it")
    add_model_data(p)
    # Checked with the rest of the config (every problem named at once), not by argparse.
    p.add_argument("--activation", help=f"a catalogue name: {', '.join(ACTIVATIONS)} (see `reluswap activations`)")
    p.add_argument("--strategy", help="which sites to replace (default all; see `reluswap sites`)")
    p.add_argument("--init", choices=INITS)
    p.add_argument("--granularity", choices=GRANULARITIES)
    p.add_argument("--fallback", choices=FALLBACKS, help="convrelu: sites no Conv2d consumes")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an activation option, e.g. negative_slope=0.1 (repeatable)")
    p.add_argument("--trainable", choices=TRAINABLE_MODES)
    add_training(p)
    p.add_argument("--threshold-l2", type=float, help="L2 on ConvReLU thresholds")
    p.add_argument("--out", required=True, help="output directory (weights.safetensors, conversion.json, "
                   "report.json; checkpoints/ while running)")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left in --out")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="TensorBoard event files in <out>/tensorboard (needs the tracking extra)")
    p.add_argument("--mlflow", action="store_true", default=None,
                   help="log params, per-epoch metrics and the reports to MLflow (needs the tracking extra)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default sqlite:///<out>/mlflow/mlflow.db); implies --mlflow")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_config(args) -> tuple[dict, dict]:
    files: dict = {}
    config = read_config_file(args.config)
    model_data_config(args, config, files)
    overlay(config, None, {"activation": args.activation, "strategy": args.strategy})
    overlay(config, "activation_options", {"init": args.init, "granularity": args.granularity,
                                           "fallback": args.fallback, **dict(_option(o) for o in args.option)})
    training_config(args, config)
    overlay(config, "train", {"trainable": args.trainable, "threshold_l2": args.threshold_l2})
    overlay(config, "tracking", {"tensorboard": args.tensorboard,
                                 "mlflow": True if args.mlflow_uri else args.mlflow})
    return config, files


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary(result) -> Table:
    m = result.metrics
    table = Table(title=f"reluswap finetune: {result.status}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("baseline accuracy (ReLU)", _pct(m.get("baseline_accuracy")))
    table.add_row("converted, at init", _pct(m.get("converted_accuracy_at_init")))
    table.add_row("final accuracy", _pct(m.get("final_accuracy")))
    red = m.get("relative_error_decrease")
    table.add_row("relative error decrease", "-" if red is None else f"{red:+.3f}")
    if m.get("sites_total") is not None:
        table.add_row("sites replaced", f"{m['sites_replaced']} / {m['sites_total']}")
    timings = result.report.get("timings", {})
    if timings:
        table.add_row("time", f"{sum(timings.values()):.1f} s")
    table.add_row("output", str(result.out_dir))
    return table


def run(args) -> int:
    from service.job_config import parse_config
    from worker.pipeline import run_job

    config, files = build_config(args)
    job_config = parse_config(config)  # once: fail before anything loads, naming the field
    with CancelOnInterrupt() as cancel, ProgressView("finetune", enabled=not args.quiet) as view:
        result = run_job(job_config, args.out, files=files, progress=view.on_event, should_cancel=cancel,
                         resume=not args.no_resume, device=args.device, keep_checkpoints=args.keep_checkpoints,
                         tracking_uri=args.mlflow_uri)
    if args.json:
        print(json.dumps({"status": result.status, "metrics": result.metrics, "error": result.error,
                          "out": str(result.out_dir)}, indent=2))
    else:
        Console().print(summary(result))
    if result.status == "failed":
        raise RuntimeError(result.error["message"] if result.error else "the job failed")
    return 0 if result.status == "succeeded" else 3
