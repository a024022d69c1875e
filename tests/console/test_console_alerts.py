"""Alerts (console/alerts.py) and the strip that shows them: raised from a fake NVML and a
crash-looping endpoint, cleared once the condition stops; per-endpoint GPU share from NVML's
per-process accounting; the rules on their own (thresholds, streaks, missed windows)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from console import alerts
from console.config import EndpointSpec
from console.gpu import NvmlSampler
from console.supervisor import BackoffPolicy, launch_endpoint
from console.widgets.alerts import AlertsStrip
from console.widgets.endpoints import EndpointsTable
from tests.support.console_app import offline_console, quiet_config
from tests.support.console_testkit import fake_command, screen_text, wait_until
from tests.support.fakes import FakeNvml
from tests.support.ports import free_port

from .test_console_app import view

SIZE = (160, 45)


def strip_lines(app: Any) -> list[str]:
    return app.query_one(AlertsStrip).lines


async def test_gpu_alerts_raise_and_clear_from_fake_nvml(console_env: Path) -> None:
    nvml = FakeNvml(count=2)
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(nvml), console_env, gpus=2)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.gpu_snapshot is not None)
        assert strip_lines(app) == [] and not app.query_one(AlertsStrip).display  # 61 C, sw power cap: fine

        nvml.temp = 86
        nvml.mem_used = int(78 * 2**30)  # 97.5 % of 80 GiB
        nvml.clock_mask = 0x40 | 0x4  # hw-thermal (bad) + sw power cap (not an alert)
        await wait_until(pilot, lambda: len(strip_lines(app)) == 6)  # three kinds on each of two GPUs
        lines = strip_lines(app)
        for gpu in ("GPU0", "GPU1"):
            assert f"{gpu}: 86 °C (>= 83 °C)" in lines
            assert f"{gpu}: throttling: hw-thermal" in lines
            assert f"{gpu}: VRAM 98 % full (> 95 %)" in lines
        assert app.query_one(AlertsStrip).display
        # the strip's lines change before the screen repaints them: wait for the paint (a CI run
        # on a loaded 2-core box once read the screen in between)
        await wait_until(pilot, lambda: "6 alerts" in screen_text(app) and "GPU0 86 °C" in screen_text(app))

        nvml.temp = 82  # just under the line; throttling and VRAM stay
        await wait_until(pilot, lambda: len(strip_lines(app)) == 4)
        assert not any("°C" in line for line in strip_lines(app))

        nvml.mem_used = 40 * 2**30
        nvml.clock_mask = 0x4
        await wait_until(pilot, lambda: strip_lines(app) == [])
        assert not app.query_one(AlertsStrip).display


async def test_crash_looping_endpoint_alert_raises_then_clears(console_env: Path, reaper: list[int]) -> None:
    """A real process that exits 0.3 s after each start: the supervisor restarts it, the strip
    names it as crash-looping; once it stays up (reset_after) the alert clears by itself."""
    port = free_port()
    crash = {"on": True}

    def launcher(spec: EndpointSpec, log: Path) -> Any:
        extra = ("--crash-after", "0.3") if crash["on"] else ()
        handle = launch_endpoint(spec, log, command=lambda s: fake_command(s, *extra))
        reaper.append(handle.pid)
        return handle

    config = quiet_config(endpoints=[EndpointSpec(port, "smoke")], log_dir=console_env / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), console_env)
    app.supervise = True
    app.supervisor.launcher = launcher
    app.supervisor.policy = BackoffPolicy(initial=0.1, factor=1.0, maximum=0.2, reset_after=1.5)
    async with app.run_test(size=SIZE) as pilot:
        name = f"gen-{port}"
        await wait_until(
            pilot, lambda: any(line.startswith(f"{name}: crash-looping") for line in strip_lines(app)), 30
        )
        await wait_until(pilot, lambda: f"{name} crash-looping" in screen_text(app))  # painted too

        crash["on"] = False  # the next restart stays up
        await wait_until(pilot, lambda: not any(name in line for line in strip_lines(app)), 30)
        assert app.supervisor.endpoints[port].quick_crashes == 0
        assert app.supervisor.endpoints[port].running


async def test_per_endpoint_gpu_share_from_nvml_processes(console_env: Path) -> None:
    nvml = FakeNvml(count=1)
    nvml.processes = {4242: 21 * 2**30, 5151: None}  # 5151: NVML_VALUE_NOT_AVAILABLE
    nvml.process_util = {4242: 73}
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(nvml), console_env, gpus=1)
    async with app.run_test(size=(200, 50)) as pilot:
        app.show_endpoints([view(10006, pid=4242), view(10007, pid=5151), view(10008, pid=6161)])
        table = app.query_one(EndpointsTable)
        await wait_until(pilot, lambda: table.cell_text(10006, "vram") == "21.0G")
        assert table.cell_text(10006, "sm") == "73%"
        assert (table.cell_text(10007, "vram"), table.cell_text(10007, "sm")) == ("N/A", "N/A")
        assert (table.cell_text(10008, "vram"), table.cell_text(10008, "sm")) == (
            "N/A",
            "N/A",
        )  # not on a GPU

        nvml.fail = {"processes", "process_util"}  # a driver without per-process accounting
        await wait_until(pilot, lambda: table.cell_text(10006, "vram") == "N/A")
        assert table.cell_text(10006, "sm") == "N/A"
        assert table.cell_text(10006, "status") == "ready"  # the rest keeps working


def test_process_utilisation_keeps_the_last_sample_while_the_process_runs() -> None:
    nvml = FakeNvml(count=1)
    nvml.processes = {7: 2**30}
    nvml.process_util = {7: 40}
    sampler = NvmlSampler(nvml)
    assert sampler.sample().gpus[0].processes[7].sm_util == 40.0  # type: ignore[index]
    nvml.process_util = {}  # NVML answers NOT_FOUND: no sample newer than the last read
    assert sampler.sample().gpus[0].processes[7].sm_util == 40.0  # type: ignore[index]
    nvml.processes = {}  # the process ended: forgotten
    assert sampler.sample().gpus[0].processes == {}


def ep(name: str = "gen-1", status: str = "ready", last_s: float | None = 20.0, quick: int = 0) -> Any:
    return SimpleNamespace(name=name, status=status, last_s=last_s, quick_crashes=quick)


def test_endpoint_rules() -> None:
    assert alerts.endpoint_alerts([ep()]) == []
    assert [a.kind for a in alerts.endpoint_alerts([ep(status="errored")])] == ["errored"]
    assert [a.kind for a in alerts.endpoint_alerts([ep(status="restarting", quick=1)])] == []
    assert [a.kind for a in alerts.endpoint_alerts([ep(status="restarting", quick=2)])] == ["crash_loop"]
    assert alerts.endpoint_alerts([ep(status="stopped", quick=5)]) == []  # stopped on purpose
    slow = alerts.endpoint_alerts([ep(last_s=30.5)])
    assert [(a.source, a.kind) for a in slow] == [("gen-1", "slow")] and "30.5 s > validators' 30 s" in slow[
        0
    ].text
    assert alerts.endpoint_alerts([ep(last_s=30.0)]) == []  # at the window, not past it


def test_score_streak_and_missed_windows() -> None:
    def r(score: float | None, uid: int = 12) -> Any:
        return SimpleNamespace(score=score, uid=uid)

    assert alerts.score_alerts([r(0.5), r(0.4)]) == []  # two is not a streak
    found = alerts.score_alerts([r(0.9), r(0.5, 12), r(None), r(0.4, 27), r(0.59, 49)])
    assert [a.kind for a in found] == ["low_scores"] and "validators 12, 27, 49" in found[0].text
    assert alerts.score_alerts([r(0.5), r(0.4), r(0.6)]) == []  # the last one made it: cleared
    assert alerts.missed_alerts(0) == []
    assert alerts.missed_alerts(2)[0].line() == "validators: 2 missed window(s) in the last 4 h"


async def test_score_streak_and_missed_window_alerts_from_the_mining_state(
    console_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's rehearsal state on a stopped clock: three low scores raise the streak alert, a
    good one clears it; a missed window shows until it leaves the 4-hour window."""
    from console.mining.events import FeedbackReceived
    from tests.support.console_demo import DEMO_NOW, demo_console

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    app = demo_console(console_env / "logs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        state = app.mining.controller.state
        clock = app.mining.controller.clock

        def feedback(t: float, score: float) -> None:
            state.apply(FeedbackReceived(t, 27, "a red chair", score, cooldown_until=t + 300))

        app.update_alerts()
        assert not any(line.startswith("scores:") for line in strip_lines(app))
        for i, score in enumerate((0.41, 0.55, 0.38)):
            feedback(DEMO_NOW + i, score)
        app.update_alerts()
        await pilot.pause()
        assert "scores: last 3 scores < 0.6 (validators 27): more iters or guidance" in strip_lines(app)
        feedback(DEMO_NOW + 5, 0.71)
        app.update_alerts()
        assert not any(line.startswith("scores:") for line in strip_lines(app))

        state.ledger.note_missed(DEMO_NOW + 6, 81)
        app.update_alerts()
        assert "validators: 1 missed window(s) in the last 4 h" in strip_lines(app)
        clock.advance(4 * 3600 + 10)
        app.update_alerts()
        assert not any(line.startswith("validators:") for line in strip_lines(app))
