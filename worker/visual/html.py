"""report.html: one self-contained page (inline CSS, PNGs as data URIs) from a Jinja2 template.

Autoescaping is on, so any string from report.json (a metadata value, an error message, an
architecture name) is shown as text and can never inject markup into the page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .plotting import Figure

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"


@dataclass
class Section:
    """One figure section: the figure, or why it is missing."""

    title: str
    figure: Figure | None = None
    note: str | None = None

    @property
    def data_uri(self) -> str | None:
        if self.figure is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.figure.png).decode("ascii")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def summary(report: dict) -> dict:
    """The numbers and strings of the summary section, formatted (the template only lays out)."""
    config = report.get("config") if isinstance(report.get("config"), dict) else {}
    metrics = report.get("metrics") or {}
    model, data = report.get("model") or {}, report.get("data") or {}
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    options = config.get("activation_options") if isinstance(config.get("activation_options"), dict) else {}
    at_init = report.get("at_init") or {}
    timings = report.get("timings") or {}
    replaced, total = metrics.get("sites_replaced"), metrics.get("sites_total")
    rows = [
        ("Model", model.get("arch") or (config.get("model") or {}).get("arch")),
        ("Classes", model.get("num_classes") or data.get("num_classes")),
        ("Parameters", f"{model['parameters']:,}" if model.get("parameters") is not None else None),
        ("Weights", model.get("weights")),
        ("Data", data.get("uri") or dataset.get("uri")),
        ("Images (train / val)", f"{data['train_size']} / {data['val_size']}"
         if data.get("train_size") is not None else None),
        ("Image size", data.get("image_size")),
        ("Activation", config.get("activation")),
        ("Init / granularity", " / ".join(str(options.get(k) or "default") for k in ("init", "granularity"))
         if options else None),
        ("Strategy", config.get("strategy")),
        ("Sites replaced / total", f"{replaced} / {total}" if total is not None else None),
        ("ConvReLU form", (report.get("convrelu_impl") or {}).get("used")),
        ("Device", (report.get("environment") or {}).get("device")),
    ]
    accuracy = [
        ("Original model", _percent(metrics.get("baseline_accuracy"))),
        ("Converted, at init", _percent(metrics.get("converted_accuracy_at_init"))),
        ("After fine-tuning", _percent(metrics.get("final_accuracy"))),
        ("Relative error decrease", _percent(metrics.get("relative_error_decrease"))),
    ]
    if at_init.get("checked"):
        accuracy.append(("Predictions changed at init", f"{at_init.get('prediction_mismatches')} "
                         f"({at_init.get('near_tie_mismatches')} near ties)"))
    return {
        "status": report.get("status") or "unknown",
        "error": report.get("error") if isinstance(report.get("error"), dict) else None,
        "rows": [(k, v) for k, v in rows if v not in (None, "")],
        "accuracy": accuracy,
        "timings": [(stage, _seconds(t)) for stage, t in timings.items()],
        "total_time": _seconds(sum(t for t in timings.values() if isinstance(t, (int, float)))) if timings else None,
        "versions": sorted((report.get("versions") or {}).items()),
        "metadata": sorted((config.get("metadata") or {}).items()) if isinstance(config.get("metadata"), dict) else [],
    }


def render_html(report: dict, sections: list[Section]) -> str:
    template = _environment().get_template(TEMPLATE)
    info = summary(report)
    title = " · ".join(str(v) for v in (dict(info["rows"]).get("Model"), dict(info["rows"]).get("Activation")) if v)
    return template.render(title=title or "reluswap job", summary=info, sections=sections)
