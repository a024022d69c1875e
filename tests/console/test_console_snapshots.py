"""Snapshot tests of the console's layout at the three sizes a miner uses (80x24 SSH default,
120x40, 200x60): main screen, help, quit dialog and the mining view, from the fixed demo state
in tests/support/console_demo.py. A layout change that moves anything fails here; after a
deliberate change, review the new pictures and accept them with

    pytest tests/console/test_console_snapshots.py --snapshot-update

(scripts/screenshots.py writes the README's pictures from the same state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from console.widgets.confirm import QuitScreen
from tests.support.console_demo import demo_console, show_demo, use_utc

REPO = Path(__file__).resolve().parents[2]
SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x60": (200, 60)}


async def main_screen(pilot: Pilot[Any]) -> None:
    await show_demo(pilot)


async def help_screen(pilot: Pilot[Any]) -> None:
    await show_demo(pilot)
    await pilot.press("question_mark")
    await pilot.pause(0.2)


async def quit_dialog(pilot: Pilot[Any]) -> None:
    # `q` asks only when this console runs endpoints; the demo runs none, so open the same dialog
    await show_demo(pilot)
    pilot.app.push_screen(QuitScreen(3))
    await pilot.pause(0.2)


async def mining_view(pilot: Pilot[Any]) -> None:
    await show_demo(pilot)
    pilot.app.show_view("mining")  # type: ignore[attr-defined]
    await pilot.pause(0.2)


SCREENS: dict[str, Callable[[Pilot[Any]], Awaitable[None]]] = {
    "main": main_screen,
    "help": help_screen,
    "quit": quit_dialog,
    "mining": mining_view,
}


@pytest.fixture
def demo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(REPO)  # the demo's log path is relative to the repository
    undo = use_utc()
    yield tmp_path
    undo()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_console_layout(snap_compare: Any, demo_env: Path, screen: str, size: str) -> None:
    app = demo_console(demo_env / "logs")
    assert snap_compare(app, terminal_size=SIZES[size], run_before=SCREENS[screen])
