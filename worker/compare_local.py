"""A compare job on this machine: the same children, statistics and files as the service's, run by
`reluswap compare` in-process (one child at a time) or over N worker processes.

    leaderboard = run_compare(cfg, out_dir, files={"weights": path}, jobs=2, on_child=print)

Layout of out_dir: children/<name>/ (each child's artifacts, report.json included), then the
compare's own leaderboard.json, leaderboard.csv, leaderboard.png and the winner's model files.
The original is measured first (once); the training children then run, N at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from service.compare_config import ChildPlan, CompareConfig, plan_children
from service.compare_results import copy_winner_files, leaderboard_from_reports, reports_under, winner_child
from service.leaderboard import write_leaderboard

CHILDREN = "children"


def child_name(plan: ChildPlan) -> str:
    if plan.kind == "original":
        return "original"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", plan.arm).strip("_")
    return f"{slug}-seed{plan.seed_index}"


def _run_child(config: dict, out_dir: str, files: dict, device: str | None, threads: int | None,
               measure_only: bool = False) -> tuple[str, dict | None]:
    """One child, in this process or a pool's (spawned: a fresh torch per process)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .pipeline import run_job

    result = run_job(config, out_dir, files=files, device=device, measure_only=measure_only, resume=True)
    return result.status, result.error


def run_compare(cfg: CompareConfig, out_dir: str | os.PathLike, files: dict | None = None, jobs: int = 1,
                device: str | None = None, alpha: float = 0.05,
                on_child: Callable[[dict], None] | None = None) -> dict:
    """Run every child, then write the leaderboard; returns it. on_child({id, arm, seed_index,
    status, error}) is called as each child ends. Raises RuntimeError when the original fails."""
    out_dir = Path(out_dir)
    plans = plan_children(cfg)
    files = dict(files or {})
    children: list[dict] = [{"id": child_name(p), "arm": p.arm, "child_kind": p.kind, "seed_index": p.seed_index,
                             "config": p.config, "status": "queued", "error": None} for p in plans]
    notify = on_child or (lambda child: None)
    original = children[0]
    original["status"], original["error"] = _run_child(plans[0].config, str(out_dir / CHILDREN / "original"), files,
                                                       device, None, measure_only=True)
    notify(original)
    if original["status"] != "succeeded":
        raise RuntimeError(f"the original model could not be measured: {(original['error'] or {}).get('message')}")
    child_files = {**files, "original": str(out_dir / CHILDREN / "original")}
    training = children[1:]
    if jobs <= 1:
        for child in training:
            child["status"], child["error"] = _run_child(child["config"], str(out_dir / CHILDREN / child["id"]),
                                                         child_files, device, None)
            notify(child)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)  # no oversubscription across the processes
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_child, c["config"], str(out_dir / CHILDREN / c["id"]), child_files, device,
                                   threads): c for c in training}
            for future in as_completed(futures):
                child = futures[future]
                try:
                    child["status"], child["error"] = future.result()
                except Exception as err:  # a crashed child process: the child failed, the rest go on
                    child["status"], child["error"] = "failed", {"code": "internal_error", "param": None,
                                                                 "message": f"{type(err).__name__}: {err}"}
                notify(child)

    leaderboard = leaderboard_from_reports(children, reports_under(lambda child_id: out_dir / CHILDREN / child_id),
                                           alpha)
    write_leaderboard(leaderboard, out_dir)
    winner = winner_child(leaderboard)
    if winner:
        copy_winner_files(out_dir / CHILDREN / winner, out_dir)
    return leaderboard
