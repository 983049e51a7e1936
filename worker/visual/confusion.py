"""Confusion matrices of the original model and of the fine-tuned one."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import Normalize

from .plotting import Figure, new_figure, render

# Above this many classes the per-cell counts would be unreadable: colour only.
ANNOTATE_MAX_CLASSES = 20
PANELS = (("baseline", "before (original model)"), ("final", "after fine-tuning"))


def confusion(report: dict) -> Figure | None:
    """report[baseline|final]["confusion"]: rows are true classes, columns predicted ones."""
    data = {}
    for key, _ in PANELS:
        matrix = (report.get(key) or {}).get("confusion")
        if matrix:
            data[key] = np.asarray(matrix, dtype=np.int64)
    if not data:
        return None
    classes = max(m.shape[0] for m in data.values())
    names = list((report.get("data") or {}).get("classes") or [])
    labels = names if len(names) == classes else [str(i) for i in range(classes)]
    side = max(4.0, 1.5 + 0.3 * classes)
    fig = new_figure(side * len(data) + 1.0, side)
    axes = np.atleast_1d(fig.subplots(1, len(data), squeeze=False).ravel())
    titles = dict(PANELS)
    for ax, (key, matrix) in zip(axes, data.items()):
        # Colour by the share of each true class, so classes of different sizes compare.
        rows = matrix.sum(axis=1, keepdims=True)
        shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
        image = ax.imshow(shares, cmap="Blues", norm=Normalize(0, 1), interpolation="nearest")
        accuracy = np.trace(matrix) / max(matrix.sum(), 1)
        ax.set_title(f"{titles[key]}: accuracy {accuracy:.2%}", fontsize=10)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ticks = range(matrix.shape[0])
        fontsize = 8 if classes <= ANNOTATE_MAX_CLASSES else 5
        rotation = 90 if max(len(label) for label in labels) > 3 else 0  # long class names stay apart
        ax.set_xticks(ticks, labels[: matrix.shape[1]], fontsize=fontsize, rotation=rotation)
        ax.set_yticks(ticks, labels[: matrix.shape[0]], fontsize=fontsize)
        if classes <= ANNOTATE_MAX_CLASSES:
            for (i, j), count in np.ndenumerate(matrix):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
        fig.colorbar(image, ax=ax, label="share of true class", shrink=0.8)
    return Figure("confusion.png", "Confusion matrices", render(fig), data)
