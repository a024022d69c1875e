"""Fixtures the mining tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's state and config dirs under tmp_path: nothing read from or left in $HOME."""
    monkeypatch.setenv("GEN404_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GEN404_CONFIG_DIR", str(tmp_path / "config"))
