"""The adaptive layout's parts: columns dropped by priority, views (`v`) on small terminals, the
GPU pane without a GPU, the history ring and its plots screen (`h`)."""

from __future__ import annotations

from pathlib import Path

from textual_plotext import PlotextPlot

from console.gpu import NvmlSampler
from console.history import History
from console.widgets.columns import Column, fit_columns, natural_widths
from console.widgets.endpoints import EndpointsTable
from console.widgets.history import PLOTS, HistoryScreen
from tests.support.console_app import offline_console, quiet_config
from tests.support.console_testkit import screen_text, wait_until
from tests.support.fakes import FakeNvml

from .test_console_app import view

COLS = (
    Column("name", "name", 0),
    Column("port", "port", 3),
    Column("note", "note", 5),
    Column("rate", "/h", 1),
)


def test_columns_drop_highest_priority_first_and_keep_order() -> None:
    widths = natural_widths(COLS, [{"name": "gen-10006", "port": "10006", "note": "x" * 30, "rate": "157.3"}])
    assert widths == {"name": 9, "port": 5, "note": 30, "rate": 5}
    everything = sum(widths.values()) + 2 * len(COLS)
    assert [c.key for c in fit_columns(COLS, widths, everything)] == ["name", "port", "note", "rate"]
    assert [c.key for c in fit_columns(COLS, widths, everything - 1)] == ["name", "port", "rate"]
    assert [c.key for c in fit_columns(COLS, widths, 20)] == ["name", "rate"]
    assert [c.key for c in fit_columns(COLS, widths, 3)] == ["name"]  # priority 0 always stays


def test_history_keeps_the_last_hour_bounded_and_skips_unknowns() -> None:
    h = History(window_s=3600, max_samples=100)
    h.record("x", 0.0, 1.0)
    h.record("x", 10.0, None)  # unknown now: not a zero
    h.record("x", 5.0, 9.0)
    h.record("x", 4.0, 7.0)  # out of order: dropped
    assert h.points("x", 10.0) == [(0.0, 1.0), (5.0, 9.0)]
    assert h.points("x", 3601.0) == [(5.0, 9.0)]  # the sample at t=0 left the window
    for t in range(4000, 4300):
        h.record("y", float(t), 1.0)
    assert len(h.points("y", 4300.0)) == 100  # capped
    h.record_scores([(1.0, 0.7), (2.0, None), (3.0, 0.4)])
    h.record_scores([(1.0, 0.7), (3.0, 0.4), (4.0, 0.8)])  # the same recent list again, one new
    assert h.points("score", 10.0) == [(1.0, 0.7), (3.0, 0.4), (4.0, 0.8)]
    h.record_endpoints([150.0, None, 100.0], [20.0, None, 30.0], 5000.0)
    assert h.points("throughput", 5000.0) == [(5000.0, 250.0)] and h.points("gen_time", 5000.0) == [
        (5000.0, 25.0)
    ]


async def test_small_terminal_views_and_columns(console_env: Path) -> None:
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), console_env)
    async with app.run_test(size=(200, 60)) as pilot:
        app.show_endpoints([view(10006, message="restarted after crash (1 quick)"), view(10007)])
        await wait_until(pilot, lambda: app.gpu_snapshot is not None)
        await pilot.pause()
        table = app.query_one(EndpointsTable)
        body = app.query_one("#body")
        assert app.effective_view() == "all" and body.has_class("view-all")
        assert body.has_class("-no-gpu")
        assert app.query_one("#gpus").region.width == 0  # no GPU: the pane takes no room
        assert app.query_one("#mining").region.width == 200
        assert "no GPU: NVIDIA driver not available" in screen_text(app)
        wide = [c.key for c in table.shown]
        assert {"port", "pid", "note", "p95"} <= set(wide)
        assert table.region.height == 2 + 1 + 2  # border, header, two rows: no empty rows kept

        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: "port" not in [c.key for c in table.shown])
        assert app.effective_view() == "mining"
        narrow = [c.key for c in table.shown]
        assert {"name", "preset", "status", "per_hour"} <= set(narrow)
        assert not {"port", "pid", "note", "p95"} & set(narrow)
        assert app.query_one("#log").region.height == 0 and app.query_one("#mining").region.height > 0
        await pilot.press("v")
        assert app.effective_view() == "gpus" and "NVIDIA driver not available" in screen_text(app)
        await pilot.press("v")
        assert app.effective_view() == "log" and app.query_one("#log").region.height > 0
        await pilot.press("v")
        assert app.effective_view() == "mining"  # "all" is skipped below 32 rows

        await pilot.resize_terminal(200, 60)
        await wait_until(pilot, lambda: "port" in [c.key for c in table.shown])
        assert table.cell_text(10006, "port") == "10006"


async def test_history_screen_plots_the_recorded_samples(console_env: Path) -> None:
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(FakeNvml(count=2)), console_env, gpus=2)
    async with app.run_test(size=(160, 48)) as pilot:
        app.show_endpoints([view(10006)])
        # GPU ticks record the endpoints too; on a loaded box two ticks can land before the
        # views above, so wait for a tick that saw them
        await wait_until(
            pilot,
            lambda: (
                len(app.history.points("gpu1.temp", app.clock())) >= 2
                and bool(app.history.points("throughput", app.clock()))
            ),
        )
        assert app.history.points("throughput", app.clock())[-1][1] == 154.2
        await pilot.press("h")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        by_id = {spec.id: screen.series_for(spec) for spec in PLOTS}
        assert set(by_id["temp"]) == {"GPU0", "GPU1"} and all(v for v in by_id["temp"].values())
        assert by_id["temp"]["GPU0"][-1][1] == 61.0
        assert by_id["throughput"]["throughput"]
        assert by_id["score"] == {"score": []}  # no mining results in this test
        assert len(screen.query(PlotextPlot)) == len(PLOTS)
        text = screen_text(app)
        assert "GPU temperature" in text and "no samples yet" in text  # the scores plot is empty
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
