"""The visual results of a job: PNG figures, metrics.csv and one self-contained report.html.

    names = write_visual_report(report, out_dir, params)

report is report.json's content (a failed or cancelled job's partial report too); params maps the
replaced sites' parameter keys (as in report["sites"][i]["parameters"]) to their final values.
Each figure function is callable alone and returns a Figure (PNG bytes and the data it drew), or
None when the report lacks its data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .confusion import confusion
from .html import Section, render_html
from .metrics_csv import metrics_csv
from .parameters import convrelu_thresholds, parameter_histograms
from .plotting import Figure
from .shapes import activation_shapes
from .site_stats import activation_stats
from .training import training_curves

__all__ = [
    "Figure",
    "activation_shapes",
    "activation_stats",
    "confusion",
    "convrelu_thresholds",
    "metrics_csv",
    "parameter_histograms",
    "training_curves",
    "write_visual_report",
]

log = logging.getLogger(__name__)

HTML_FILE = "report.html"
METRICS_FILE = "metrics.csv"


def _uses_convrelu(report: dict) -> bool:
    config = report.get("config") if isinstance(report.get("config"), dict) else {}
    return config.get("activation") == "convrelu" or any(
        s.get("replacement") == "convrelu" for s in report.get("sites") or [])


MISSING = "Not in this report."
NO_PARAMS = "Not in this report (the learned parameter values were not passed)."


def _sections(report: dict, params: dict | None) -> list[tuple[str, Callable[[], Figure | None], str]]:
    """(title, figure builder, what the page says when the builder has nothing to draw)."""
    convrelu = _uses_convrelu(report)
    shapes_missing = ("ConvReLU thresholds act inside the convolution: see the threshold maps." if convrelu
                      else MISSING)
    sections = [
        ("Training curves", lambda: training_curves(report), "No training step was logged."),
        ("Activation statistics", lambda: activation_stats(report), MISSING),
        ("Learned activation shapes", lambda: activation_shapes(report, params), shapes_missing),
        ("Learned parameters", lambda: parameter_histograms(report, params), MISSING if params else NO_PARAMS),
    ]
    if convrelu:
        sections.append(("ConvReLU thresholds", lambda: convrelu_thresholds(report, params),
                         MISSING if params else NO_PARAMS))
    sections.append(("Confusion matrices", lambda: confusion(report), MISSING))
    return sections


def write_visual_report(report: dict, out_dir: Path, params: dict[str, np.ndarray] | None = None) -> list[str]:
    """Write the figures (PNG), metrics.csv and report.html into out_dir; return the names written.

    A figure whose data the report lacks is skipped. One that fails to draw is logged and noted in
    the page, never raised: the visual report must not fail a job whose model is already trained.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    sections: list[Section] = []
    for title, build, missing in _sections(report, params):
        try:
            figure = build()
        except Exception as err:  # noqa: BLE001 -- reported in the page and the log instead
            log.exception("visual report: %s could not be drawn", title)
            sections.append(Section(title, note=f"Could not be drawn: {type(err).__name__}: {err}"))
            continue
        if figure is None:
            sections.append(Section(title, note=missing))
            continue
        (out_dir / figure.name).write_bytes(figure.png)
        written.append(figure.name)
        sections.append(Section(title, figure))

    (out_dir / METRICS_FILE).write_text(metrics_csv(report))
    written.append(METRICS_FILE)
    (out_dir / HTML_FILE).write_text(render_html(report, sections), encoding="utf-8")
    written.append(HTML_FILE)
    return written
