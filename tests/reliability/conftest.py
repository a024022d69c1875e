"""Reliability suite fixtures: a private presets/state/config environment, one shared keyed
generation endpoint and one keyed validation service (real `gen404 serve` / `gen404 validator`
subprocesses on free loopback ports), and the figures the tests measure.

Starting a server costs ~5-20 s of imports on a 2-core box, so the two services are shared by
the whole directory; tests that kill or freeze an endpoint start their own. This directory has
no __init__.py, so "package" scope would mean the whole session: instead the environment and the
shared servers are released by `pytest_runtest_teardown` when the last test here is done, so
nothing leaks into the test files that run after this directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.reliability_kit import API_KEY, AUTH, QUEUE, VALIDATOR_BODY_LIMIT, Figures, write_presets
from tests.support.server import ServerProcess, running_server

SERVE_ARGS = ["serve", "--preset", "tiny", "--device", "cpu", "--queue", str(QUEUE)]
VALIDATOR_ARGS = ["validator", "--size", "32", "--views", "4", "--model", "gen404-tiny"]
VALIDATOR_ARGS += ["--random-weights", "--device", "cpu", "--max-body-mb", str(VALIDATOR_BODY_LIMIT // 2**20)]

HERE = Path(__file__).resolve().parent
_on_leaving: list[Callable[[], None]] = []  # run (last in, first out) after this directory's last test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield  # the item's own fixtures first (a monkeypatch undo must not re-set our variables)
    if nextitem is None or HERE not in Path(str(nextitem.path)).resolve().parents:
        while _on_leaving:
            _on_leaving.pop()()


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

    def restore() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    _on_leaving.append(restore)
    yield root
    restore()


@pytest.fixture(scope="session")
def presets_dir(reliability_env: Path) -> Path:
    return reliability_env / "presets"


def _shared_server(name: str, args: list[str], **kw: object) -> Iterator[ServerProcess]:
    stack = contextlib.ExitStack()
    server = stack.enter_context(running_server(args, headers=AUTH, **kw))  # type: ignore[arg-type]

    closed = False

    def close() -> None:  # from the leaving hook or the fixture's own teardown, whichever is first
        nonlocal closed
        if closed:
            return
        closed = True
        alive = server.proc.poll() is None
        output = "" if alive else server.output()[-3000:]
        stack.close()  # SIGTERM, then SIGKILL
        assert alive, f"the shared {name} died during the suite:\n{output}"

    _on_leaving.append(close)
    try:
        yield server
    finally:
        close()


@pytest.fixture(scope="session")
def endpoint(reliability_env: Path) -> Iterator[ServerProcess]:
    """`gen404 serve --preset tiny --queue 4 --api-key KEY --log-level debug` (access log on)."""
    yield from _shared_server("endpoint", [*SERVE_ARGS, "--api-key", API_KEY, "--log-level", "debug"])


@pytest.fixture(scope="session")
def validator(reliability_env: Path) -> Iterator[ServerProcess]:
    """`gen404 validator` (tiny random CLIP, 4 views at 32 px, 1 MiB body limit, API key)."""
    args = [*VALIDATOR_ARGS, "--api-key", API_KEY, "--log-level", "debug"]
    # it has no /health: the 404 JSON of the open path says it is up
    yield from _shared_server("validator", args, ready=lambda h: True)


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    figs = Figures()

    def write() -> None:
        target = os.environ.get("GEN404_RELIABILITY_FIGURES")
        if target and figs.values:
            Path(target).write_text(json.dumps(figs.values, indent=1, sort_keys=True))

    _on_leaving.append(write)
    yield figs
    write()
