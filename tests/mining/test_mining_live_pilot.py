"""Pilot: live mode follows a growing miner log into the panes (no endpoints, nothing spawned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.config import ConsoleConfig, EndpointSpec
from console.gpu import NvmlSampler
from console.mining.options import MiningOptions
from console.widgets.cooldowns import CooldownsPane
from console.widgets.scores import ScoresPane
from tests.support.console_app import offline_console
from tests.support.fakes import FakeNvml
from tests.support.miner_log import miner_log_line, stamp_now

FIXTURE = Path(__file__).parent / "fixtures" / "miner.log"


def line(msg: str) -> str:
    return miner_log_line(stamp_now(), msg)


pytestmark = pytest.mark.usefixtures("private_dirs")  # tests/mining/conftest.py


async def test_live_mode_follows_the_log(tmp_path: Path) -> None:
    log = tmp_path / "miner-out.log"
    log.write_bytes(FIXTURE.read_bytes())
    config = ConsoleConfig(
        endpoints=[EndpointSpec(1)],
        log_dir=tmp_path / "logs",
        spawn=False,
        mining=MiningOptions(miner_log=log),
    )
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        cooldowns = app.query_one(CooldownsPane)
        scores = app.query_one(ScoresPane)
        for _ in range(30):
            await pilot.pause(0.2)
            if len(cooldowns.rows) == 6:
                break
        assert "LIVE" in app.query_one("#mining").border_subtitle
        assert {r["uid"] for r in cooldowns.rows} == {"0", "12", "27", "49", "81", "133"}
        assert any(r["score"] == "0.71 ✓" for r in scores.rows)
        # the miner goes on: a fresh pull, a cooldown answer, a new feedback
        with log.open("a") as fh:
            fh.write(line("Querying task from [49]. Stake: 120000.0"))
            fh.write(line("Miner is on cooldown for the next: 90 sec. Total cooldown violations: 4"))
            fh.write(line("Querying task from [12]. Stake: 90000.0"))
            fh.write(line("Task received. Prompt: brass pocket watch with an open lid."))
            fh.write(line("Feedback received from [12]. Score: 0.64. (brass pocket watch with an open lid)"))
        for _ in range(30):
            await pilot.pause(0.2)
            row49 = next(r for r in cooldowns.rows if r["uid"] == "49")
            if row49["state"] == "cooldown":
                break
        row49 = next(r for r in cooldowns.rows if r["uid"] == "49")
        assert row49["state"] == "cooldown" and row49["violations"] == "4"
        assert row49["countdown"].startswith("1:") or row49["countdown"].endswith("s")
        assert scores.rows[0]["prompt"] == "brass pocket watch with an open lid"
        assert scores.rows[0]["score"] == "0.64 ✓"
        row12 = next(r for r in cooldowns.rows if r["uid"] == "12")
        assert row12["state"] == "cooldown" and row12["countdown"].startswith("≈")  # estimated from the rules
