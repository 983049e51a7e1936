"""Fixtures of the worker tests (the pretrained digits model is shared: tests/conftest.py)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every connect fails, and the download caches are empty folders."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("RELUSWAP_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
