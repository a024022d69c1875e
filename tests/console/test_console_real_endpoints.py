"""Acceptance: the console drives real `gen404 serve --preset smoke` subprocesses.

One Pilot session, in order: a second endpoint spawned with `n` reaches ready; `1` switches it
(GET /health reports the new preset, and so does the table); SIGKILL from outside -> the
console restarts it (new pid, same preset); `x` + `y` stops it. The test's presets dir maps
the text_mv names onto smoke's tiny models (conftest), so a switch never loads real weights.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from console.config import EndpointSpec
from console.supervisor import proc_alive
from console.widgets.endpoints import EndpointsTable
from tests.support.console_app import quiet_config, supervising_console
from tests.support.console_testkit import endpoint_health, wait_until
from tests.support.ports import free_port_range

GEN404 = Path(sys.executable).parent / "gen404"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GEN404.exists() and not shutil.which("gen404"), reason="gen404 not installed"),
]


async def test_spawn_switch_kill_restart_stop_real_endpoints(console_env: Path, reaper: list[int]) -> None:
    first = free_port_range(3)
    second = first + 1
    config = quiet_config(
        endpoints=[EndpointSpec(first, "smoke")], log_dir=console_env / "logs", refresh=0.5, first_port=first
    )
    app = supervising_console(config)
    async with app.run_test(size=(200, 50)) as pilot:
        sup = app.supervisor
        table = app.query_one(EndpointsTable)
        try:
            await wait_until(
                pilot, lambda: first in sup.endpoints and sup.endpoints[first].process is not None
            )
            reaper.append(sup.endpoints[first].process.pid)
            await pilot.press("n")
            await wait_until(pilot, lambda: second in sup.endpoints)
            reaper.append(sup.endpoints[second].process.pid)
            assert table.selected_port == second
            await wait_until(pilot, lambda: table.cell_text(second, "status") == "ready", timeout=120)
            assert (
                endpoint_health(second)["status"] == "ready" and endpoint_health(second)["preset"] == "smoke"
            )

            await pilot.press("1")
            await wait_until(
                pilot, lambda: table.cell_text(second, "preset") == "text_mv_ultra_fast", timeout=30
            )
            assert endpoint_health(second)["preset"] == "text_mv_ultra_fast"

            old_pid = sup.endpoints[second].process.pid
            os.kill(old_pid, signal.SIGKILL)
            await wait_until(
                pilot,
                lambda: (
                    table.cell_text(second, "restarts") == "1"
                    and table.cell_text(second, "status").startswith(("loading", "ready"))
                ),
                timeout=90,
            )
            new_pid = sup.endpoints[second].process.pid
            reaper.append(new_pid)
            assert new_pid != old_pid and table.cell_text(second, "pid") == str(new_pid)
            assert endpoint_health(second)["pid"] == new_pid
            assert endpoint_health(second)["preset"] == "text_mv_ultra_fast"  # the restart kept the switch

            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            await wait_until(pilot, lambda: table.cell_text(second, "status") == "stopped", timeout=30)
            assert not proc_alive(new_pid, None)
            with pytest.raises(httpx.ConnectError):
                endpoint_health(second)
        finally:
            await sup.shutdown(stop_endpoints=True)
