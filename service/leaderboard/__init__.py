"""Leaderboards of compare jobs: statistics over seeds, verdicts against the ReLU control, and the
leaderboard.json / .csv / .png files. Torch-free, so the API can import it.

    board = build_leaderboard(arms, original, alpha=0.05)   # a strict-JSON-ready dict
    names = write_leaderboard(board, artifacts_dir)         # ["leaderboard.json", ...]
"""

from service.leaderboard.build import (
    VERDICTS,
    Arm,
    ControlFailed,
    Original,
    SeedResult,
    build_leaderboard,
)
from service.leaderboard.writers import CSV_COLUMNS, write_leaderboard

__all__ = [
    "CSV_COLUMNS",
    "VERDICTS",
    "Arm",
    "ControlFailed",
    "Original",
    "SeedResult",
    "build_leaderboard",
    "write_leaderboard",
]
