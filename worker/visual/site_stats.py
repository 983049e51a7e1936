"""Per-site activation statistics before and after fine-tuning, one bar pair per site."""

from __future__ import annotations

import numpy as np

from .plotting import AFTER_COLOR, BEFORE_COLOR, Figure, as_float, new_figure, per_item_height, render

METRICS = (
    ("lifetime_sparsity", "Lifetime sparsity (mean activation probability)"),
    ("dispersion", "Dispersion (std of activation probability)"),
    ("dead_fraction", "Dead units (fraction never active)"),
)


def _in_order(stats: list[dict] | None) -> list[dict]:
    return sorted(stats or [], key=lambda s: s.get("index", 0))


def activation_stats(report: dict) -> Figure | None:
    stats = report.get("activation_stats") or {}
    before, after = _in_order(stats.get("before")), _in_order(stats.get("after"))
    if not before and not after:
        return None
    # Sites in execution order; "after" is matched by name since a partial report may lack it.
    names = [s["name"] for s in (before or after)]
    by_name = {"before": {s["name"]: s for s in before}, "after": {s["name"]: s for s in after}}
    replaced = {s["name"] for s in report.get("sites") or [] if s.get("replaced")}
    data: dict = {"sites": names, "replaced": [n in replaced for n in names]}
    for key, _ in METRICS:
        data[key] = {
            when: [as_float(by_name[when][n].get(key)) if n in by_name[when] else None for n in names]
            if by_name[when] else None
            for when in ("before", "after")
        }

    n = len(names)
    fig = new_figure(16, per_item_height(n))
    axes = fig.subplots(1, len(METRICS), sharey=True)
    y = np.arange(n)
    # Replaced sites are marked, so unchanged ReLUs read as the control group.
    labels = [f"{name} *" if flag else name for name, flag in zip(names, data["replaced"])]
    for ax, (key, title) in zip(axes, METRICS):
        series = [(when, color) for when, color in (("before", BEFORE_COLOR), ("after", AFTER_COLOR))
                  if data[key][when] is not None]
        height = 0.8 / len(series)
        for i, (when, color) in enumerate(series):
            values = [as_float(v) for v in data[key][when]]
            ax.barh(y - 0.4 + height * (i + 0.5), values, height=height, color=color, label=when)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()  # execution order top to bottom
    axes[0].set_ylabel("site (execution order; * = replaced)")
    axes[-1].legend(fontsize=8, loc="lower right")
    return Figure("activation_stats.png", "Activation statistics per site", render(fig), data)
