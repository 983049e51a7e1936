"""From a compare job's children and their report.json to its leaderboard: shared by the service
(children in the database, reports in storage) and the CLI (children and reports on disk).

A child is a dict with id, arm, child_kind ("original" | "train"), status, config and error; a
report is what the pipeline wrote (metrics, final, peak, predictions.val_correct as a string of
0/1 per validation image, in the same order for every child).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .compare_config import CONTROL_ACTIVATION
from .leaderboard import Arm, Original, SeedResult, build_leaderboard

REPORT = "report.json"
# The winner's files keep a job's names, so `reluswap export` and load_conversion read them alike.
WINNER_FILES = ("model.onnx", "weights.safetensors", "conversion.json")

ReportOf = Callable[[str], "dict | None"]


def reports_under(folder_of: Callable[[str], Path]) -> ReportOf:
    """report_of(child id): the child's report.json in folder_of(child id); None when missing or
    unreadable (a child that crashed before writing it)."""

    def report_of(child_id: str) -> dict | None:
        try:
            return json.loads((folder_of(child_id) / REPORT).read_text())
        except (OSError, ValueError):
            return None

    return report_of


def _correct(report: dict) -> list[bool] | None:
    bits = (report.get("predictions") or {}).get("val_correct")
    return None if bits is None else [b == "1" for b in bits]


def original_result(child: dict, report_of: ReportOf) -> Original:
    report = report_of(child["id"]) or {}
    baseline = report.get("baseline") or {}
    if "accuracy" not in baseline:
        raise ValueError(f"the original's report ({child['id']}) has no baseline accuracy")
    return Original(accuracy=baseline["accuracy"], test_accuracy=baseline.get("test_accuracy"),
                    correct=_correct(report))


def seed_result(child: dict, report_of: ReportOf) -> SeedResult:
    seed = child["config"]["train"]["seed"]
    report = report_of(child["id"]) if child["status"] == "succeeded" else None
    if report is None:
        status = child["status"] if child["status"] != "succeeded" else "failed"
        return SeedResult(seed=seed, status=status, child_id=child["id"], error=child.get("error"))
    peak = report.get("peak") or {}
    return SeedResult(
        seed=seed, status="succeeded", child_id=child["id"],
        final_accuracy=report["metrics"]["final_accuracy"],
        test_accuracy=(report.get("final") or {}).get("test_accuracy"),
        peak_epoch=peak.get("epoch"), peak_val_accuracy=peak.get("val_accuracy"),
        peak_test_accuracy=peak.get("test_accuracy"), correct=_correct(report))


def arm_results(children: Sequence[dict], report_of: ReportOf) -> list[Arm]:
    """One Arm per arm name, in the children's order, its seeds in seed order."""
    by_arm: dict[str, list[dict]] = {}
    for child in children:
        if child["child_kind"] == "train":
            by_arm.setdefault(child["arm"], []).append(child)
    arms = []
    for name, runs in by_arm.items():
        runs = sorted(runs, key=lambda c: c["config"]["train"]["seed"])
        cfg = runs[0]["config"]
        config = {"activation": cfg["activation"], "strategy": cfg["strategy"],
                  "trainable": cfg["train"]["trainable"], "init": cfg["activation_options"]["init"]}
        arms.append(Arm(name=name, config=config, control=name == CONTROL_ACTIVATION,
                        seeds=tuple(seed_result(c, report_of) for c in runs)))
    return arms


def leaderboard_from_reports(children: Sequence[dict], report_of: ReportOf, alpha: float) -> dict:
    original = next(c for c in children if c["child_kind"] == "original")
    return build_leaderboard(arm_results(children, report_of), original_result(original, report_of), alpha=alpha)


def winner_child(leaderboard: dict) -> str | None:
    """The winner arm's seed with the best validation accuracy (chosen on validation, like the best
    epoch, so the held-out numbers stay honest); None when it has no succeeded seed."""
    arm = next(a for a in leaderboard["arms"] if a["name"] == leaderboard["winner"]["arm"])
    runs = [s for s in arm["seeds"] if s["status"] == "succeeded"]
    return max(runs, key=lambda s: s["final_accuracy"])["child_id"] if runs else None


def copy_winner_files(source: Path, out: Path) -> list[str]:
    copied = []
    for name in WINNER_FILES:
        if (source / name).is_file():
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, out / name)  # never a half-copied model under the final name
            copied.append(name)
    return copied
