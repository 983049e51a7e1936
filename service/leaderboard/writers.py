"""Write a leaderboard dict (from build_leaderboard) as leaderboard.json, leaderboard.csv and
leaderboard.png. Every file is written to a temporary name first and moved into place, so a reader
never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

JSON_NAME = "leaderboard.json"
CSV_NAME = "leaderboard.csv"
PNG_NAME = "leaderboard.png"

CONFIG_COLUMNS = ("activation", "strategy", "trainable", "init")
SEED_COLUMNS = ("seed", "status", "child_id", "final_accuracy", "test_accuracy", "peak_epoch",
                "peak_val_accuracy", "peak_test_accuracy", "relative_error_decrease", "diff_to_control",
                "mcnemar_b", "mcnemar_c")
CSV_COLUMNS = ("arm", "control", *CONFIG_COLUMNS, *SEED_COLUMNS, "verdict")

FIG_WIDTH, LABEL_INCHES, LEGEND_INCHES = 11.0, 3.0, 1.7

VERDICT_COLORS = {
    "better": "#2ca02c",
    "worse": "#d62728",
    "no_difference": "#7f7f7f",
    "failed": "#c7c7c7",
    "control": "#1f77b4",
}


def write_leaderboard(leaderboard: dict, out_dir: str | os.PathLike) -> list[str]:
    """Write leaderboard.json, leaderboard.csv and leaderboard.png into out_dir; return their names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(leaderboard, out / JSON_NAME)
    write_csv(leaderboard, out / CSV_NAME)
    write_png(leaderboard, out / PNG_NAME)
    return [JSON_NAME, CSV_NAME, PNG_NAME]


def _atomic_write(path: Path, data: bytes) -> None:
    # A temp name of its own: two writers never truncate each other's file before the rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(leaderboard: dict, path: Path) -> None:
    """Strict JSON: a NaN or infinity that slipped in is an error here, not a file others cannot parse."""
    text = json.dumps(leaderboard, indent=2, allow_nan=False) + "\n"
    _atomic_write(Path(path), text.encode())


def csv_rows(leaderboard: dict) -> list[dict]:
    """One row per arm x seed, in leaderboard order; None becomes an empty cell."""
    rows = []
    for arm in leaderboard["arms"]:
        config = {k: _cell(arm["config"].get(k)) for k in CONFIG_COLUMNS}
        for seed in arm["seeds"]:
            rows.append({
                "arm": arm["name"],
                "control": arm["control"],
                **config,
                **{k: _cell(seed.get(k)) for k in SEED_COLUMNS},
                "verdict": arm["verdict"],
            })
    return rows


def _cell(value):
    # Lists or dicts in a config (e.g. several trainable groups) go in as JSON, not Python reprs.
    if value is None:
        return ""
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return value


def write_csv(leaderboard: dict, path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(leaderboard))
    _atomic_write(Path(path), buf.getvalue().encode())


def write_png(leaderboard: dict, path: Path) -> None:
    """Mean final accuracy per arm with its 95% CI, per-seed points, the control and original lines."""
    # Figure + FigureCanvasAgg: no pyplot, so no global backend switch and no figure registry to leak.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = leaderboard["arms"]
    height = 1.6 + 0.38 * max(len(arms), 1)
    fig = Figure(figsize=(FIG_WIDTH, height))
    FigureCanvasAgg(fig)
    # Fixed margins (in inches) instead of a layout engine: cheaper, and room for long arm names.
    fig.subplots_adjust(left=LABEL_INCHES / FIG_WIDTH, right=1 - LEGEND_INCHES / FIG_WIDTH,
                        bottom=0.6 / height, top=1 - 0.45 / height)
    try:
        _draw(fig.add_subplot(), leaderboard)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        fig.clear()
    _atomic_write(Path(path), buf.getvalue())


def _draw(ax, leaderboard: dict) -> None:
    arms = leaderboard["arms"]
    winner = leaderboard["winner"]["arm"]
    ys = list(range(len(arms)))[::-1]  # rank 1 at the top
    for y, arm in zip(ys, arms, strict=True):
        color = VERDICT_COLORS.get(arm["verdict"], "#000000")
        summary = arm["final_accuracy"]
        seeds = [s["final_accuracy"] for s in arm["seeds"] if s["status"] == "succeeded"]
        ax.scatter(seeds, [y] * len(seeds), s=14, color=color, alpha=0.55, zorder=2)
        if summary["mean"] is None:
            continue
        xerr = None
        if summary["ci"] is not None:
            lo, hi = summary["ci"]
            xerr = [[summary["mean"] - lo], [hi - summary["mean"]]]
        marker = "*" if arm["name"] == winner else "o"
        ax.errorbar(summary["mean"], y, xerr=xerr, fmt=marker, color=color, ecolor=color,
                    markersize=12 if marker == "*" else 6, capsize=3, zorder=3)
    _reference_lines(ax, leaderboard)
    ax.set_yticks(ys, [_label(a, winner) for a in arms], fontsize=8)
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.set_xlabel("final validation accuracy (mean, 95% CI; dots: seeds)")
    ax.set_title(f"Leaderboard (alpha={leaderboard['alpha']}, winner: {winner})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _legend(ax)


def _reference_lines(ax, leaderboard: dict) -> None:
    control = next((a for a in leaderboard["arms"] if a["control"]), None)
    if control is not None and control["final_accuracy"]["mean"] is not None:
        ax.axvline(control["final_accuracy"]["mean"], color=VERDICT_COLORS["control"], lw=1,
                   label="ReLU control (mean)")
    ax.axvline(leaderboard["original"]["accuracy"], color="black", lw=1, ls="--", label="original")


def _label(arm: dict, winner: str) -> str:
    tags = []
    if arm["control"]:
        tags.append("control")
    if arm["verdict"] == "failed":
        tags.append("failed")
    if arm["name"] == winner:
        tags.append("winner")
    return arm["name"] + (f"  [{', '.join(tags)}]" if tags else "")


def _legend(ax) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLORS.items()]
    handles.append(Line2D([], [], marker="*", ls="", color="black", markersize=10, label="winner"))
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
