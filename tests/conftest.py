"""Shared fixtures: the subnet's real files live in tests/vectors and tests/data (see their README)."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine  # noqa: F401  (first: sets OMP_WAIT_POLICY before any test module imports torch)

TESTS_DIR = Path(__file__).resolve().parent
VECTORS_DIR = TESTS_DIR / "vectors"
DATA_DIR = TESTS_DIR / "data"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS_DIR


@pytest.fixture(scope="session")
def prompts_file() -> Path:
    return DATA_DIR / "prompts.txt"
