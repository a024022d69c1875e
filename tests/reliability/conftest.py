"""Reliability suite fixtures: a private presets/state/config environment, one shared keyed
generation endpoint and one keyed validation service (real `gen404 serve` / `gen404 validator`
subprocesses on free loopback ports), and the figures the tests measure.

Starting a server costs ~10-20 s of imports on a busy 2-core box, so the two services are
session-scoped and shared; tests that kill or freeze an endpoint start their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_server import ServerProcess, running_server
from reliability_kit import API_KEY, AUTH, QUEUE, VALIDATOR_BODY_LIMIT, Figures, write_presets

SERVE_ARGS = ["serve", "--preset", "tiny", "--device", "cpu", "--queue", str(QUEUE)]
VALIDATOR_ARGS = ["validator", "--size", "32", "--views", "4", "--model", "gen404-tiny"]
VALIDATOR_ARGS += ["--random-weights", "--device", "cpu", "--max-body-mb", str(VALIDATOR_BODY_LIMIT // 2**20)]


@pytest.fixture(scope="session", autouse=True)
def reliability_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GEN404_PRESETS_DIR (tiny/slow/alt presets), GEN404_STATE_DIR, GEN404_CONFIG_DIR: private."""
    root = tmp_path_factory.mktemp("reliability")
    values = {
        "GEN404_PRESETS_DIR": str(write_presets(root / "presets")),
        "GEN404_STATE_DIR": str(root / "state"),
        "GEN404_CONFIG_DIR": str(root / "config"),
    }
    saved = {k: os.environ.get(k) for k in (*values, "GEN404_API_KEY")}
    os.environ.update(values)
    os.environ.pop("GEN404_API_KEY", None)
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def presets_dir(reliability_env: Path) -> Path:
    return reliability_env / "presets"


@pytest.fixture(scope="session")
def endpoint(reliability_env: Path) -> Iterator[ServerProcess]:
    """`gen404 serve --preset tiny --queue 4 --api-key KEY --log-level debug` (access log on)."""
    args = [*SERVE_ARGS, "--api-key", API_KEY, "--log-level", "debug"]
    with running_server(args, headers=AUTH) as server:
        yield server
        assert server.proc.poll() is None, "the shared endpoint died during the suite"


@pytest.fixture(scope="session")
def validator(reliability_env: Path) -> Iterator[ServerProcess]:
    """`gen404 validator` (tiny random CLIP, 4 views at 32 px, 1 MiB body limit, API key)."""
    args = [*VALIDATOR_ARGS, "--api-key", API_KEY, "--log-level", "debug"]
    # it has no /health: the 404 JSON of the open path says it is up
    with running_server(args, headers=AUTH, ready=lambda h: True) as server:
        yield server
        assert server.proc.poll() is None, "the validation service died during the suite"


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    figs = Figures()
    yield figs
    target = os.environ.get("GEN404_RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(figs.values, indent=1, sort_keys=True))
