"""What every figure shares: the result type, the PNG rendering and the size rules.

Figures are built on matplotlib.figure.Figure with an Agg canvas, never through pyplot, so no
global figure registry holds them (a worker renders many reports in one process).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

DPI = 100
# Agg refuses images above 2**16 pixels a side; stay well below whatever the site count.
MAX_INCHES = 300.0
BEFORE_COLOR, AFTER_COLOR = "#8c8c8c", "#1f77b4"


@dataclass(frozen=True)
class Figure:
    """One rendered figure: its file name, a caption, the PNG, and the numbers it drew."""

    name: str
    title: str
    png: bytes = field(repr=False)
    data: dict = field(repr=False)


def new_figure(width: float, height: float) -> MplFigure:
    fig = MplFigure(figsize=(min(width, MAX_INCHES), min(height, MAX_INCHES)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def per_item_height(count: int, inches_each: float = 0.28, base: float = 1.6, minimum: float = 3.0) -> float:
    """A height that gives each row (site, channel) a readable band, however many there are."""
    return max(minimum, base + inches_each * count)


def finite(values) -> np.ndarray:
    """The finite entries as float64: a diverged run's NaN/inf must not break a histogram."""
    arr = np.asarray([np.nan if v is None else v for v in np.ravel(values)], dtype=np.float64)
    return arr[np.isfinite(arr)]


def as_float(value) -> float:
    """None (a value the report lacks) as NaN, which matplotlib leaves out."""
    return float("nan") if value is None else float(value)


def no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])
