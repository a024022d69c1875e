"""Shared fixtures: the subnet's real files live in ../shared beside the repo root."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine  # noqa: F401  (first: sets OMP_WAIT_POLICY before any test module imports torch)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()
VECTORS_DIR = SHARED_DIR / "vectors"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"expected the shared folder beside the repo at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    return shared_dir / "vectors"


@pytest.fixture(scope="session")
def prompts_file(shared_dir: Path) -> Path:
    return shared_dir / "data" / "prompts.txt"
