"""Fixtures of the CLI tests: the command line run in-process or as `python -m reluswap`."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture
def reluswap_cli():
    """reluswap_cli(*args) -> CompletedProcess of `python -m reluswap ARGS` (text, captured)."""

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reluswap", *args], capture_output=True, text=True,
                              timeout=timeout)

    return run
