"""The log pane follows its endpoint's log file: it shows the newest lines as the file grows,
and leaves a reader who scrolled up where they are."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.pilot import Pilot

from console.widgets.logs import LogPane, read_tail


class PaneApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LogPane(id="pane")


def _append(path: Path, start: int, count: int) -> None:
    with open(path, "a") as fh:
        fh.writelines(f"line {i}\n" for i in range(start, start + count))


async def _following(pilot: Pilot[None], log: Path) -> LogPane:
    """The app's pane following `log` (100 lines), rendered."""
    _append(log, 0, 100)
    pane = pilot.app.query_one(LogPane)
    pane.follow(log, "gen")
    await pilot.pause()
    return pane


def _last_visible(pane: LogPane) -> str:
    bottom = int(pane.scroll_offset.y) + pane.scrollable_content_region.height - 1
    return pane.lines[min(bottom, len(pane.lines) - 1)]


async def test_pane_keeps_following_the_end_as_the_log_grows(tmp_path: Path) -> None:
    log = tmp_path / "gen.log"
    async with PaneApp().run_test(size=(80, 20)) as pilot:
        pane = await _following(pilot, log)
        assert _last_visible(pane) == "line 99"
        for start in (100, 150):  # the file grows between polls (a generation logs lines)
            _append(log, start, 50)
            pane.poll()
            await pilot.pause()
            assert _last_visible(pane) == f"line {start + 49}"


async def test_pane_leaves_a_reader_who_scrolled_up_in_place(tmp_path: Path) -> None:
    log = tmp_path / "gen.log"
    async with PaneApp().run_test(size=(80, 20)) as pilot:
        pane = await _following(pilot, log)
        pane.scroll_to(y=10, animate=False)
        await pilot.pause()
        _append(log, 100, 50)
        pane.poll()
        await pilot.pause()
        assert int(pane.scroll_offset.y) == 10 and pane.lines[-1] == "line 149"


def test_read_tail_drops_the_cut_first_line_and_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "gen.log"
    _append(log, 0, 1000)
    lines = read_tail(log, max_bytes=200, max_lines=10)
    assert lines == [f"line {i}" for i in range(990, 1000)]
    assert read_tail(log, max_bytes=30)[0].startswith("line ")  # no partial first line
    assert read_tail(tmp_path / "missing.log") == []
