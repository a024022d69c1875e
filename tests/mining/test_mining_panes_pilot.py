"""Pilot: the mining panes show each validator's own view (rating, accepted), the miner's 300 s skip,
and a score's parts on demand (click the recent-scores pane)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from console.config import ConsoleConfig, EndpointSpec
from console.gpu import NvmlSampler
from console.mining.controller import MiningOptions
from console.mining.events import FeedbackReceived
from console.widgets.cooldowns import CooldownsPane
from console.widgets.scores import ScoresPane
from tests.support.console_app import offline_console
from tests.support.fakes import FakeNvml
from tests.support.miner_log import miner_log_line, stamp_now

FIXTURES = Path(__file__).parent / "fixtures"
HK81 = "5Hk81qzTn2uYbWxK9cVfGh8wDeRt6yUiOp1aSdFgHjKlZxCv"  # validators_4workers.yaml


def line(msg: str, level: str = "DEBUG") -> str:
    return miner_log_line(stamp_now(), msg, level)


pytestmark = pytest.mark.usefixtures("private_dirs")  # tests/mining/conftest.py


async def test_validator_views_skip_and_score_parts(tmp_path: Path) -> None:
    log = tmp_path / "miner-out.log"
    log.write_bytes((FIXTURES / "miner_4workers.log").read_bytes())
    with log.open("a") as fh:  # now: a pull from 81 fails, the miner skips it for 300 s
        fh.write(line("Querying task from [81]. Stake: 30000.0"))
        fh.write(line(f"Failed to get task from [{HK81}]. Reason: Timeout.", "WARNING"))
    config = ConsoleConfig(
        endpoints=[EndpointSpec(1)],
        log_dir=tmp_path / "logs",
        spawn=False,
        mining=MiningOptions(miner_log=log, validators_file=FIXTURES / "validators_4workers.yaml"),
    )
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        cooldowns = app.query_one(CooldownsPane)
        scores = app.query_one(ScoresPane)
        for _ in range(30):
            await pilot.pause(0.2)
            if any(r["uid"] == "81" and r["state"] == "skipped" for r in cooldowns.rows):
                break
        rows = {r["uid"]: r for r in cooldowns.rows}
        assert rows["81"]["state"] == "skipped" and rows["81"]["countdown"].startswith("4:")
        assert (rows["27"]["rating"], rows["27"]["accepted"]) == ("1530", "12")  # 27's own view
        assert (rows["49"]["rating"], rows["49"]["accepted"]) == ("1480", "3")
        assert rows["12"]["rating"] == "-"  # 12 never reported
        assert rows["49"]["score"] == "0.00 ?"  # not accepted; the log does not say why

        # a result scored by the validation service, with its parts (the state the pane shows)
        mining_state = scores._state
        assert mining_state is not None
        parts = {"iqa": 0.81, "alignment_score": 0.66, "ssim": 0.9, "lpips": 0.12}
        mining_state.apply(FeedbackReceived(time.time(), 27, "a brass lamp", 0.71, parts=parts))
        await pilot.pause(1.0)
        assert scores.rows[0]["prompt"] == "a brass lamp"
        assert scores.rows[0]["parts"] == "iqa 0.81 align 0.66 ssim 0.90 lpips 0.12"
        assert not scores.show_parts
        await pilot.click(ScoresPane)
        await pilot.pause(0.2)
        assert scores.show_parts
        caption = str(scores.query_one("#scores-caption").render())
        assert "click: endpoints" in caption
