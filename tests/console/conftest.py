"""Console test fixtures: private XDG dirs, a fake NVML module, endpoint launchers, cleanup.

Real endpoints (`gen404 serve --preset smoke`) are used by the acceptance tests; the stdlib
fake endpoint (fake_endpoint.py) keeps the fast supervisor tests fast. Every process a test
spawns is killed in fixture teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from console.supervisor import launch_endpoint, proc_alive, read_state
from tests.support.console_testkit import fake_command, kill_group

# stand-in for the GPU presets: same tiny models as smoke, so switching never reloads big weights
STANDIN_PRESET = "extends: smoke\ndescription: test stand-in ({name}) with smoke's tiny models\n"


@pytest.fixture(autouse=True)
def console_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private config/state dirs and test presets for every console test."""
    monkeypatch.setenv("GEN404_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GEN404_CONFIG_DIR", str(tmp_path / "config"))
    presets = tmp_path / "presets"
    presets.mkdir()
    for name in ("text_mv_ultra_fast", "text_mv_fast", "text_mv"):
        (presets / f"{name}.yaml").write_text(STANDIN_PRESET.format(name=name))
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(presets))
    return tmp_path


@pytest.fixture
def fake_launcher() -> Any:
    return partial(launch_endpoint, command=fake_command)


@pytest.fixture
def reaper(console_env: Path) -> Iterator[list[int]]:
    """Collects pids to kill at teardown; also kills whatever the state file still lists."""
    pids: list[int] = []
    yield pids
    state = console_env / "state" / "endpoints.json"
    for item in read_state(state):
        if proc_alive(int(item["pid"]), item.get("start_ticks")):
            pids.append(int(item["pid"]))
    for pid in pids:
        kill_group(pid)
