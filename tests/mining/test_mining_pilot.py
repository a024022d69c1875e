"""Acceptance: the console's rehearsal against two real `gen404 serve` endpoints, compressed time.

Two endpoint subprocesses run smoke's tiny models (this test's presets dir: `smoke_gate_ok`, 3
iterations, passes the validity gate; `smoke_gate_fail`, 1000 Gaussians, fails it: too few). On a 2-core CPU the stock smoke preset (30 iterations) takes far too
long for a test; these are the same models and code path with fewer steps. The gate-only scorer
stands in for the validation service, so one endpoint's results are accepted and the other's
are penalised. The Pilot session checks that countdowns move, scores arrive and the ledger counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.config import ConsoleConfig, EndpointSpec
from console.gpu import NvmlSampler
from console.mining.options import MiningOptions
from console.widgets.cooldowns import CooldownsPane
from console.widgets.scores import ScoresPane
from tests.support.console_app import offline_console
from tests.support.fakes import FakeNvml
from tests.support.ports import free_ports

GEN404 = Path(sys.executable).parent / "gen404"
TIME_SCALE = 30.0  # 300 s cooldowns pass in 10 s
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not GEN404.exists(), reason="gen404 not installed")]

PRESETS = {
    "smoke_gate_ok": "extends: smoke\ndescription: smoke models, 3 iterations (test)\niters: 3\n",
    "smoke_gate_fail": (
        "extends: smoke\ndescription: smoke models, 1000 Gaussians (test)\niters: 1\n"
        "num_pts: 1000\nmin_output_gaussians: 1000\nmax_gaussians: 1000\n"
    ),
}
COMMON = (
    "render_size: 32\nref_size: 32\ndensification_interval: 1\ndensity_start_iter: 0\ndensity_end_iter: 1\n"
)


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[dict[int, str]]:
    presets = tmp_path / "presets"
    presets.mkdir()
    for name, text in PRESETS.items():
        (presets / f"{name}.yaml").write_text(text + COMMON)
    env = {**os.environ, "GEN404_PRESETS_DIR": str(presets), "OMP_NUM_THREADS": "1"}
    ports = free_ports(2)
    procs: list[subprocess.Popen] = []
    by_port = dict(zip(ports, PRESETS, strict=True))
    try:
        for port, preset in by_port.items():
            cmd = [str(GEN404), "serve", "--port", str(port), "--preset", preset, "--device", "cpu"]
            log = (tmp_path / f"serve-{port}.log").open("wb")
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
        yield by_port
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


async def wait_for(pilot, predicate, timeout: float, what: str, info=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {info()}")


async def test_rehearsal_with_two_real_endpoints(
    endpoints: dict[int, str], prompts_file: Path, tmp_path: Path
) -> None:
    config = ConsoleConfig(
        endpoints=[EndpointSpec(p, preset) for p, preset in endpoints.items()],
        log_dir=tmp_path / "logs",
        spawn=False,
        mining=MiningOptions(prompts_file=prompts_file, time_scale=TIME_SCALE, validator_url=None),
    )
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), tmp_path)
    async with app.run_test(size=(220, 60)) as pilot:
        mining = app.mining
        cooldowns = app.query_one(CooldownsPane)
        scores = app.query_one(ScoresPane)
        assert "REHEARSAL" in app.query_one("#mining").border_subtitle
        assert "×30" in app.query_one("#mining").border_subtitle

        def accepted_and_penalised() -> bool:
            states = {r["state"] for r in cooldowns.rows}
            return (
                mining.controller.state.ledger.accepted(mining.controller.now()) >= 1
                and "penalised" in states
            )

        def info() -> str:
            c = mining.controller
            return f"{c.message!r} {c.state.snapshot(c.now())['counters']} {mining.reward_text!r} {cooldowns.rows}"

        await wait_for(
            pilot, accepted_and_penalised, 120, "an accepted result and a penalised validator", info
        )
        assert "gate-only" in app.query_one("#mining").border_subtitle

        mining.refresh()  # the panes as of this moment (the timer refreshes every 0.5 s)
        # scores arrived: rows name our endpoints, the presets they report, and the 0.6 verdict
        rows = scores.rows
        assert rows
        ports = {str(p) for p in endpoints}
        assert {r["endpoint"].rsplit(":", 1)[-1] for r in rows} <= ports
        # image tasks (about 1 in 5) are refused by the smoke endpoints before any generation: their
        # rows carry the task's image log id and no preset; every text row names a real preset
        image_rows = [r for r in rows if r["prompt"].startswith("image:")]
        text_rows = [r for r in rows if r not in image_rows]
        assert all(r["preset"] == "-" and len(r["prompt"]) == len("image:") + 64 for r in image_rows)
        assert {r["preset"] for r in text_rows} <= set(PRESETS)
        by_preset = {r["preset"]: r["score"] for r in text_rows}
        if "smoke_gate_fail" in by_preset:
            assert by_preset["smoke_gate_fail"] == "0.00 ✗"  # gate failed: a real 0
        if "smoke_gate_ok" in by_preset:
            assert by_preset["smoke_gate_ok"] == "gate ok ✓"  # no invented quality
        prompts = set(prompts_file.read_text().splitlines())
        assert all(r["prompt"] in prompts for r in text_rows)

        # the reward line counts the ledger
        line = mining.reward_text
        accepted = mining.controller.state.ledger.accepted(mining.controller.now())
        assert f"accepted (4h): {accepted}" in line
        assert "mean score: gate-only" in line

        # countdowns move: a validator on cooldown shows less time left a moment later
        def cooling() -> dict[str, str]:
            return {
                r["uid"]: r["countdown"] for r in cooldowns.rows if r["state"] in ("cooldown", "penalised")
            }

        before = cooling()
        assert before
        await pilot.pause(1.5)  # 45 simulated seconds
        after = cooling()
        moved = [uid for uid in before if uid in after and after[uid] != before[uid]]
        finished = [uid for uid in before if uid not in after]
        assert moved or finished

        tasks = sum(int(r["tasks"]) for r in cooldowns.rows)
        assert tasks >= 2
        mining.stop()
