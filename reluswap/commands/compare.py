"""`reluswap compare`: which activation helps this model, against the BatchNorm-only control, over
seeds, with a verdict. The same children and statistics as POST /compare, run on this machine."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ._jobargs import (
    add_model_data,
    add_training,
    model_data_config,
    overlay,
    read_config_file,
    training_config,
)
from ._leaderboard import leaderboard_table, winner_line


def add(sub) -> None:
    p = sub.add_parser("compare", help="compare activations and strategies against the ReLU control, over seeds")
    p.add_argument("--config", help="a compare config as JSON (the POST /compare body); flags override it")
    add_model_data(p)
    p.add_argument("--activations", help="comma-separated catalogue names, e.g. pvlu,frelu,convrelu (relu is "
                   "always the control)")
    p.add_argument("--strategies", help="comma-separated strategies (default all), e.g. all,block:first")
    p.add_argument("--inits", help="comma-separated inits to compare (default: identity alone)")
    p.add_argument("--seeds", type=int, help="runs per arm (default 3)")
    p.add_argument("--test-split", type=float, help="fraction of the training data held out (default 0.2)")
    add_training(p)
    p.add_argument("--alpha", type=float, default=0.05,
                   help="level of the Holm-corrected McNemar test against the control (default 0.05)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes running children at once (default 1)")
    p.add_argument("--out", required=True, help="output directory (children/, leaderboard.*, the winner's model)")
    p.add_argument("--json", action="store_true", help="print leaderboard.json instead of a table")
    p.set_defaults(run=run)


def _items(text: str | None) -> list[str] | None:
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def build_config(args) -> tuple[dict, dict]:
    files: dict = {}
    config = read_config_file(args.config)
    model_data_config(args, config, files)
    overlay(config, None, {"activations": _items(args.activations), "strategies": _items(args.strategies),
                           "inits": _items(args.inits), "seeds": args.seeds, "test_split": args.test_split})
    training_config(args, config)
    return config, files


def run(args) -> int:
    from service.compare_config import child_count, parse_compare_config
    from worker.compare_local import run_compare

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    config, files = build_config(args)
    cfg = parse_compare_config(config)  # every problem named before anything loads
    console = Console(stderr=True)
    total = child_count(cfg)
    ended = 0

    def on_child(child: dict) -> None:
        nonlocal ended
        ended += 1
        seed = "" if child["seed_index"] is None else f" seed {child['seed_index']}"
        why = f": {child['error']['message']}" if child.get("error") else ""
        style = {"succeeded": "green", "failed": "red"}.get(child["status"], "yellow")
        console.print(f"[{ended}/{total}] {child['arm']}{seed}: [{style}]{child['status']}[/{style}]{why}")

    console.print(f"compare: {total} children (the original, then {total - 1} runs), {args.jobs} at a time")
    leaderboard = run_compare(cfg, args.out, files=files, jobs=args.jobs, device=args.device, alpha=args.alpha,
                              on_child=on_child)
    if args.json:
        print(json.dumps(leaderboard, indent=2))
    else:
        out = Console()
        out.print(leaderboard_table(leaderboard))
        out.print(winner_line(leaderboard))
        out.print(f"files: {Path(args.out) / 'leaderboard.json'}, leaderboard.csv, leaderboard.png")
    return 0
