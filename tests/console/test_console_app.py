"""Pilot tests of the console with deterministic fakes (fake NVML, stdlib fake endpoints):
main-screen content, help, keymap, palette, refresh keys, no driver, actions on endpoints."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

from textual.binding import Binding

from console.app import Gen404Console
from console.config import EndpointSpec
from console.gpu import NvmlSampler
from console.keys import KEY_TABLE
from console.supervisor import EndpointView, launch_endpoint, proc_alive, read_state
from console.widgets.confirm import ConfirmScreen
from console.widgets.endpoints import EndpointsTable
from console.widgets.gpu import GpuPane
from console.widgets.help import HelpScreen
from tests.support.console_app import quiet_config, supervising_console
from tests.support.console_testkit import fake_command, screen_text, wait_until
from tests.support.fakes import FakeNvml
from tests.support.ports import free_port_range

SIZE = (200, 50)


def view(port: int, **kw: Any) -> EndpointView:
    base: dict[str, Any] = dict(
        name=f"gen-{port}",
        port=port,
        gpu="0",
        preset="text_mv_fast",
        status="ready",
        pid=4242,
        uptime_s=3725.0,
        restarts=2,
        queue=1,
        in_flight=1,
        done=118,
        failed=3,
        last_s=21.4,
        mean_s=22.96,
        p95_s=27.3,
        per_hour=154.2,
        message="",
        log_path="/nonexistent.log",
    )
    base.update(kw)
    return EndpointView(**base)


def static_app(console_env: Path, nvml: FakeNvml | None = None, **cfg: Any) -> Gen404Console:
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", **cfg)
    return Gen404Console(config, sampler=NvmlSampler(nvml or FakeNvml(count=1)), supervise=False)


async def test_main_screen_shows_gpus_endpoints_and_mining_room(console_env: Path) -> None:
    app = static_app(console_env)
    async with app.run_test(size=SIZE) as pilot:
        app.show_endpoints(
            [
                view(10006),
                view(
                    10007,
                    status="errored",
                    gpu=None,
                    preset="smoke",
                    pid=None,
                    message="10 quick crashes in a row",
                ),
            ]
        )
        await wait_until(pilot, lambda: app.query_one(GpuPane).snapshot is not None)
        await pilot.pause()
        table = app.query_one(EndpointsTable)
        row = {
            c: table.cell_text(10006, c)
            for c in (
                "name",
                "port",
                "gpu",
                "preset",
                "status",
                "pid",
                "uptime",
                "restarts",
                "active",
                "queue",
                "done",
                "failed",
                "last",
                "mean",
                "p95",
                "per_hour",
            )
        }
        assert row == {
            "name": "gen-10006",
            "port": "10006",
            "gpu": "0",
            "preset": "text_mv_fast",
            "status": "ready",
            "pid": "4242",
            "uptime": "1h",
            "restarts": "2",
            "active": "1",  # running (this view reports no max_batch)
            "queue": "1",  # waiting behind it
            "done": "118",
            "failed": "3",
            "last": "21.4s",
            "mean": "23.0s",
            "p95": "27.3s",
            "per_hour": "154.2",
        }
        assert table.cell_text(10007, "status") == "errored" and table.cell_text(10007, "gpu") == "all"
        text = screen_text(app)
        for needle in (
            "gen404-console",
            "GPU0",
            "NVIDIA H100 80GB HBM3",
            "61°C",
            "PWR 312/700W",
            "gen-10006",
            "gen-10007",
            "errored",
            "10 quick crashes",
            "Mining",
            "Endpoints",
            "Help",
            "Quit",
        ):
            assert needle in text, needle
        assert table.selected_port == 10006
        await pilot.press("j")  # k9s/vim row keys
        assert table.selected_port == 10007
        await pilot.press("k")
        assert table.selected_port == 10006
        assert app.query_one("#mining")  # the mining engineer's container
        assert app.query_one("#reward-summary")


async def test_no_driver_message_and_the_rest_works(console_env: Path) -> None:
    app = static_app(console_env, nvml=FakeNvml(init_error=True))
    async with app.run_test(size=SIZE) as pilot:
        app.show_endpoints([view(10006)])
        await wait_until(pilot, lambda: app.query_one(GpuPane).snapshot is not None)
        assert "No GPU monitoring" in app.query_one(GpuPane).text
        assert "NVIDIA driver not available" in screen_text(app)
        assert app.query_one(EndpointsTable).cell_text(10006, "status") == "ready"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


async def test_help_lists_every_key_and_keymap_remaps(console_env: Path) -> None:
    app = static_app(console_env, keymap={"help": "f1", "refresh_slower": "ctrl+up", "helpp": "f2"})
    async with app.run_test(size=SIZE) as pilot:
        assert any("unknown binding id(s) helpp" in m for m in app.banner_messages)
        await pilot.press("question_mark")  # remapped away
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await wait_until(pilot, lambda: "binding id" in screen_text(app))
        lines = screen_text(app).splitlines()
        # each binding's row: the key in force, then its id, then its help text, on one line
        shown = {
            "spawn_endpoint": "n",
            "stop_endpoint": "x",
            "restart_endpoint": "r",
            "preset_1": "1",
            "preset_2": "2",
            "preset_3": "3",
            "preset_all_1": "!",
            "preset_all_2": "@",
            "preset_all_3": "#",
            "advisor": "a",
            "apply_tune": "t",
            "refresh_slower": app.get_key_display(Binding("ctrl+up", "")),
            "refresh_faster": "-",
            "cycle_view": "v",
            "history": "h",
            "help": "f1",
            "quit": "q",
            "quit_ctrl_c": "^c",
        }
        assert {b.id for b in app.BINDINGS} == set(shown)
        help_text = {spec.id: spec.help for spec in KEY_TABLE}
        for binding_id, key in shown.items():
            row = re.compile(
                rf"{re.escape(key)}\s+{re.escape(binding_id)}\s*{re.escape(help_text[binding_id][:20])}"
            )
            assert any(row.search(line) for line in lines), (binding_id, key)
        assert any(re.search(r"ctrl\+p\s+\(palette\)\s+command palette", line) for line in lines)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen))
        await pilot.press("ctrl+up")
        await wait_until(pilot, lambda: app.refresh_interval == 2.0)


async def test_palette_offers_every_preset(console_env: Path) -> None:
    (console_env / "presets" / "my_tuned.yaml").write_text("extends: text_mv_fast\niters: 300\n")
    app = static_app(console_env)
    async with app.run_test(size=SIZE):
        titles = [c.title for c in app.palette_commands()]
    for name in ("text_mv_ultra_fast", "text_mv_fast", "text_mv", "smoke", "my_tuned"):
        assert f"Preset {name}: selected" in titles and f"Preset {name}: all endpoints" in titles
    assert {"Spawn endpoint", "Stop selected endpoint", "Restart selected endpoint", "Help: keys"} <= set(
        titles
    )


async def test_refresh_keys(console_env: Path) -> None:
    app = static_app(console_env)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus")
        assert app.refresh_interval == 2.0
        await pilot.press("minus", "minus", "minus")
        assert app.refresh_interval == 0.25
        await pilot.pause()
        assert "refresh 0.25s" in screen_text(app)


async def test_palette_and_keys_drive_fake_endpoints(
    console_env: Path, fake_launcher: Any, reaper: list[int]
) -> None:
    first = free_port_range(4)
    config = quiet_config(
        endpoints=[EndpointSpec(first, "auto")], log_dir=console_env / "logs", refresh=0.25, first_port=first
    )
    app = Gen404Console(
        config,
        sampler=NvmlSampler(FakeNvml()),
        launcher=fake_launcher,
        gpu_count=lambda: (0, "none"),
        have_weights=lambda: False,
    )
    async with app.run_test(size=SIZE) as pilot:
        sup = app.supervisor
        table = app.query_one(EndpointsTable)
        await wait_until(pilot, lambda: table.cell_text(first, "status") == "ready")
        assert table.cell_text(first, "preset") == "smoke"
        assert "smoke preset" in " ".join(app.banner_messages)
        # palette: ctrl+p, type, enter -> a second endpoint on the next free port
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"spawn")
        await pilot.pause(0.3)
        await pilot.press("enter")
        second = first + 1
        await wait_until(pilot, lambda: table.cell_text(second, "status") == "ready")
        assert table.selected_port == second
        # `1` on the selected endpoint, `@` on all
        await pilot.press("1")
        await wait_until(pilot, lambda: table.cell_text(second, "preset") == "text_mv_ultra_fast")
        assert table.cell_text(first, "preset") == "smoke"
        await pilot.press("at")
        await wait_until(
            pilot,
            lambda: (
                table.cell_text(first, "preset") == "text_mv_fast"
                and table.cell_text(second, "preset") == "text_mv_fast"
            ),
        )
        assert sup.endpoints[first].spec.preset == "text_mv_fast"  # restarts keep it
        # kill from outside -> restarted with a new pid
        pid = sup.endpoints[second].process.pid
        os.kill(pid, signal.SIGKILL)
        await wait_until(
            pilot,
            lambda: (
                table.cell_text(second, "restarts") == "1" and table.cell_text(second, "status") == "ready"
            ),
        )
        assert table.cell_text(second, "pid") != str(pid)
        # stop: `x`, `n` keeps it; `x`, `y` stops it
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause(0.3)
        assert sup.endpoints[second].running
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: table.cell_text(second, "status") == "stopped")
        assert not sup.endpoints[second].running
        assert [i["port"] for i in read_state(app.state_file)] == [first]
        # `r` on a stopped endpoint starts it again
        await pilot.press("r")
        await wait_until(pilot, lambda: table.cell_text(second, "status") == "ready")
        # quit, leaving them running: the state file keeps both for the next console
        pids = {p: ep.process.pid for p, ep in sup.endpoints.items()}
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause(0.3)
    assert {i["port"]: i["pid"] for i in read_state(app.state_file)} == pids
    reaper.extend(pids.values())
    # the next console adopts them (no new process) and can stop them
    app2 = Gen404Console(
        config,
        sampler=NvmlSampler(FakeNvml()),
        launcher=fake_launcher,
        gpu_count=lambda: (0, "none"),
        have_weights=lambda: False,
    )
    async with app2.run_test(size=SIZE) as pilot:
        table = app2.query_one(EndpointsTable)
        await wait_until(pilot, lambda: table.cell_text(second, "status") == "ready")
        assert table.cell_text(second, "pid") == str(pids[second])
        assert table.cell_text(second, "name") == f"gen-{second} *"
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause(0.5)
    assert read_state(app2.state_file) == []
    assert not any(proc_alive(pid, None) for pid in pids.values())


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid, self.start_ticks, self.started_wall = pid, None, 0.0

    def poll(self) -> int | None:
        return None

    def signal(self, sig: int) -> None:
        pass


async def test_new_endpoints_spread_over_gpus(console_env: Path) -> None:
    launched: list[EndpointSpec] = []

    def launcher(spec: EndpointSpec, log: Path) -> _Proc:
        launched.append(spec)
        return _Proc(90000 + len(launched))

    base = free_port_range(3)
    config = quiet_config(endpoints=[], log_dir=console_env / "logs", first_port=base)
    app = Gen404Console(config, sampler=NvmlSampler(FakeNvml(count=2)), launcher=launcher, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(GpuPane).snapshot is not None)
        await pilot.press("n", "n", "n")
        await wait_until(pilot, lambda: len(launched) == 3)
        assert [(s.port, s.gpu) for s in launched] == [(base, "0"), (base + 1, "1"), (base + 2, "0")]
        assert app.query_one(EndpointsTable).cell_text(base + 1, "gpu") == "1"
        app.supervisor.state_file = None


async def test_attach_mode_watches_without_owning(console_env: Path, reaper: list[int]) -> None:
    port = free_port_range(1)
    outside = launch_endpoint(
        EndpointSpec(port, "text_mv"), console_env / "outside.log", command=fake_command
    )
    reaper.append(outside.pid)
    config = quiet_config(
        endpoints=[EndpointSpec(port)], log_dir=console_env / "logs", spawn=False, refresh=0.25
    )
    app = supervising_console(config)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(EndpointsTable)
        await wait_until(pilot, lambda: table.cell_text(port, "status") == "ready")
        assert table.cell_text(port, "name") == f"gen-{port} *"
        assert table.cell_text(port, "preset") == "text_mv" and table.cell_text(port, "pid") == str(
            outside.pid
        )
        await pilot.press("x")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmScreen)  # refused: not ours
        assert outside.poll() is None
        await pilot.press("q")  # nothing of ours runs: quits without asking
        await pilot.pause(0.3)
    assert outside.poll() is None
