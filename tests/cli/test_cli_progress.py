"""The CLI's progress bar: stage, ETA and live loss, fitted to the terminal's width; no fixed widths."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from reluswap.commands._progress import ProgressView, format_eta

EVENTS = [
    {"type": "stage", "stage": "baseline", "stage_index": 1, "stages": 6},
    {"type": "progress", "stage": "baseline", "batch": 3, "batches": 12, "fraction": 0.25},
    {"type": "stage", "stage": "training", "stage_index": 3, "stages": 6},
    {"type": "progress", "stage": "training", "epoch": 1, "epochs": 3, "step": 120, "steps": 360,
     "fraction": 0.333, "loss": 0.41234, "accuracy": 0.88, "images_per_s": 2150.0, "lr": 0.01,
     "eta_seconds": 83.2},
]


def render(width: int, events: list[dict]) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=False)  # the final frame only
    with ProgressView("finetune", console=console) as view:
        for event in events:
            view.on_event(event)
        view.progress.refresh()
    return console.export_text()


@pytest.mark.parametrize("width", [60, 100, 160])
def test_the_bar_fits_and_shows_stage_eta_and_loss(width):
    text = render(width, EVENTS)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(len(line) <= width for line in lines), text
    last = lines[-1]
    assert "training 4/6" in last and "120/360" in last
    assert "ETA 1:23" in last and "loss 0.4123" in last
    if width >= 100:
        assert last.startswith("finetune: training") and "acc 0.880" in last
    if width >= 160:
        assert "2150 img/s" in last


def test_done_fills_the_bar():
    text = render(60, [*EVENTS, {"type": "stage", "stage": "done", "stage_index": 6, "stages": 6, "fraction": 1.0}])
    last = [line for line in text.splitlines() if line.strip()][-1]
    assert "done" in last and "ETA" not in last and "loss" not in last


def test_format_eta():
    assert format_eta(None) == "" and format_eta(0) == "0:00" and format_eta(83.2) == "1:23"
    assert format_eta(3 * 3600 + 62) == "3:01:02"


def test_no_hard_coded_console_widths():
    commands = Path(__file__).resolve().parents[2] / "reluswap"
    offenders = [str(p) for p in commands.rglob("*.py") if re.search(r"\bwidth\s*=\s*\d", p.read_text())]
    assert offenders == []
