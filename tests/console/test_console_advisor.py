"""The reward advisor from a known state: two validators (300 s cooldown, 30 s throttle, 0.6
threshold, 600 s rejection penalty), ledger results for two presets, two live endpoints.

Expected numbers are worked by hand from the validators' rules (docs/mining.md):
per validator, tasks per 4 h = 14400 / (cooldown + max(0, time - throttle) + rejections x penalty).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from console.advisor import matrix, read_bench_json, reward_per_4h, tune
from console.config import EndpointSpec
from console.gpu import NvmlSampler
from console.mining.events import AveragesReported
from console.mining.ledger import ResultRecord, project
from console.mining.rules import ValidatorRules
from console.mining.state import MiningState
from console.supervisor import EndpointView
from console.widgets.advisor import AdvisorScreen
from console.widgets.endpoints import EndpointsTable
from engine.presets import Preset, split_ref
from tests.support.console_app import offline_console, quiet_config
from tests.support.console_testkit import screen_text, wait_until
from tests.support.fakes import FakeNvml
from tests.support.server import ServerProcess, running_server

NOW = 100_000.0
PRESETS = {
    "text_mv_fast": Preset(name="text_mv_fast", iters=250, ref_size=128, guidance_scale=50.0),
    "text_mv_ultra_fast": Preset(name="text_mv_ultra_fast", iters=150, ref_size=64, guidance_scale=30.0),
}


def preset_values(ref: str) -> Preset | None:
    base, overrides = split_ref(ref)
    return replace(PRESETS[base], **overrides) if base in PRESETS else None


def view(port: int, preset: str, mean_s: float | None, status: str = "ready") -> EndpointView:
    return EndpointView(
        name=f"gen-{port}", port=port, gpu=None, preset=preset, status=status, pid=1, uptime_s=1.0,
        restarts=0, queue=0, in_flight=0, done=1, failed=0, last_s=mean_s, mean_s=mean_s, p95_s=mean_s,
        per_hour=None, message="", log_path="",
    )  # fmt: skip


def record(preset: str, time_s: float, score: float, uid: int = 1) -> ResultRecord:
    accepted = score >= 0.6
    return ResultRecord(
        NOW - 60, uid, "a lamp", "http://127.0.0.1:10006", preset, time_s, score, accepted,
        "accepted" if accepted else "rejected",
    )  # fmt: skip


@pytest.fixture
def state() -> MiningState:
    s = MiningState()
    for uid in (1, 2):
        s.add_validator(uid, ValidatorRules())
    for score in (0.7, 0.7, 0.7, 0.5):  # 3 of 4 accepted
        s.ledger.add(record("text_mv_fast", 25.0, score))
    for score in (0.5, 0.6):  # mean 0.55, 1 of 2 accepted
        s.ledger.add(record("text_mv_ultra_fast", 15.0, score))
    return s


def test_matrix_rows_from_a_known_state(state: MiningState) -> None:
    views = [view(10006, "text_mv_fast", 40.0), view(10007, "text_mv_ultra_fast", None)]
    advice = matrix(state, NOW, views, preset_values=preset_values)
    rows = {r.preset: r for r in advice.rows}
    assert advice.rating == 1500.0 and advice.rating_source == "starting rating" and advice.lanes == 2

    fast = rows["text_mv_fast"]
    assert (fast.gen_time_s, fast.time_source) == (40.0, "/stats")  # live /stats beats the ledger's 25 s
    assert fast.score == pytest.approx(0.65) and fast.acceptance == 0.75
    per_validator = 14400 / (300 + 10 + 0.25 * 600)
    assert fast.generations_4h == pytest.approx(2 * per_validator)
    assert fast.accepted_4h == pytest.approx(2 * per_validator * 0.75)
    assert fast.reward_4h == pytest.approx(2 * per_validator * 0.75 * 1500)
    assert fast.max_tasks_4h == pytest.approx(2 * 14400 / 310)
    assert fast.limited_by == "validators"

    ultra = rows["text_mv_ultra_fast"]
    assert (ultra.gen_time_s, ultra.time_source) == (15.0, "ledger")
    assert ultra.accepted_4h == pytest.approx(2 * 14400 / (300 + 0.5 * 600) * 0.5)  # 24
    assert ultra.max_tasks_4h == pytest.approx(96)

    assert [r.preset for r in advice.rows if r.best] == ["text_mv_fast"]
    assert advice.best is fast and fast.reward_4h > ultra.reward_4h


def test_rules_fire_with_their_reasons(state: MiningState) -> None:
    views = [view(10006, "text_mv_fast", 40.0), view(10007, "text_mv_ultra_fast", None)]
    advice = matrix(state, NOW, views, preset_values=preset_values)
    slow = advice.suggestions["10006"]
    assert [s.ref for s in slow] == ["text_mv_fast+iters=150", "text_mv_fast+ref_size=96"]
    assert slow[0].rule == "time > 30 s"
    assert "40.0 s is over the validators' 30 s window" in slow[0].reason and "250 → 150" in slow[0].reason
    # 0.65 >= 0.6: no quality rule for it

    weak = advice.suggestions["10007"]  # 15 s, mean score 0.55
    assert [s.ref for s in weak] == ["text_mv_ultra_fast+iters=180", "text_mv_ultra_fast+guidance_scale=40"]
    assert weak[0].rule == "score < 0.6" and "mean score 0.55" in weak[0].reason


def test_slow_and_weak_asks_for_guidance_not_more_iters() -> None:
    out = tune(
        "10006", "text_mv_fast+iters=300", preset_values("text_mv_fast+iters=300"), 36.0, 0.5, 30.0, 0.6
    )  # type: ignore[arg-type]
    refs = [s.ref for s in out]
    # overrides already in force are kept; iters scaled to ~25 s: 300 * 25 / 36 = 208 -> 200
    assert refs == [
        "text_mv_fast+iters=200",
        "text_mv_fast+iters=300+ref_size=96",
        "text_mv_fast+iters=300+guidance_scale=60",
    ]
    assert tune("k", "text_mv_fast", PRESETS["text_mv_fast"], 20.0, 0.7, 30.0, 0.6) == []


def test_reported_ratings_and_bench_times(state: MiningState, tmp_path: Path) -> None:
    state.validators[1].reported = AveragesReported(NOW, 0.7, 10, 12000.0, rating=1600.0, uid=1)
    state.validators[2].reported = AveragesReported(NOW, 0.7, 10, 12000.0, rating=1400.0, uid=2)
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "results": [
                    {
                        "label": "text_mv",
                        "preset": "text_mv",
                        "variant": "optimised",
                        "median_s": 150.0,
                        "error": None,
                    },
                    {
                        "label": "text_mv",
                        "preset": "text_mv",
                        "variant": "baseline",
                        "median_s": 300.0,
                        "error": None,
                    },
                    {
                        "label": "broken",
                        "preset": "broken",
                        "variant": "optimised",
                        "median_s": None,
                        "error": "x",
                    },
                ]
            }
        )
    )
    times = read_bench_json(bench)
    assert times == {"text_mv": 150.0}
    assert read_bench_json(tmp_path / "missing.json") == {}
    advice = matrix(state, NOW, [view(10006, "text_mv_fast", 25.0)], bench=times, preset_values=preset_values)
    assert (advice.rating, advice.rating_source) == (1500.0, "validators")  # mean of 1600 and 1400
    slow = {r.preset: r for r in advice.rows}["text_mv"]
    assert slow.time_source == "bench" and slow.acceptance_source == "assumed"
    expected = project(150.0, [ValidatorRules(), ValidatorRules()], 1, acceptance=1.0)
    assert slow.reward_4h == pytest.approx(reward_per_4h(expected, 1500.0))
    assert slow.accepted_4h == pytest.approx(2 * 14400 / (300 + 120))
    fast = {r.preset: r for r in advice.rows}["text_mv_fast"]
    # more projected reward on an assumed 100 % acceptance, so not marked best over a measured one
    assert slow.reward_4h > fast.reward_4h and fast.best and not slow.best


def test_stopped_endpoints_get_no_advice(state: MiningState) -> None:
    advice = matrix(
        state, NOW, [view(10006, "text_mv_fast", 40.0, status="stopped")], preset_values=preset_values
    )
    assert advice.suggestions == {} and advice.lanes == 1
    assert {r.preset: r.time_source for r in advice.rows}["text_mv_fast"] == "ledger"


# ---------------------------------------------------------------- Pilot: the suggestion applied


@pytest.fixture
def endpoint(console_env: Path) -> Iterator[ServerProcess]:
    # console_env's text_mv_fast is a stand-in with smoke's tiny models (iters 30)
    args = ["serve", "--preset", "text_mv_fast", "--device", "cpu", "--shutdown-grace", "0.2"]
    with running_server(args, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server


@pytest.mark.slow
async def test_applying_a_suggestion_changes_the_endpoints_preset(
    endpoint: ServerProcess, tmp_path: Path
) -> None:
    config = quiet_config(
        endpoints=[EndpointSpec(endpoint.port, "text_mv_fast")],
        log_dir=tmp_path / "logs",
        refresh=0.25,
        spawn=False,
    )
    app = offline_console(config, NvmlSampler(FakeNvml(init_error=True)), tmp_path)
    app.supervise = True  # watch the running endpoint (spawn=False starts nothing)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(EndpointsTable)
        try:
            await wait_until(pilot, lambda: table.cell_text(endpoint.port, "status") == "ready", timeout=60)
            # observed results for its preset: 10 s each, scores under the 0.6 threshold
            ledger = app.mining.controller.state.ledger
            now = app.mining.controller.now()
            for score in (0.4, 0.5):
                ledger.add(replace(record("text_mv_fast", 10.0, score), t=now - 10))

            await pilot.press("a")
            await wait_until(pilot, lambda: isinstance(app.screen, AdvisorScreen))
            body = screen_text(app)
            assert "★" in body and "text_mv_fast" in body
            assert "t → text_mv_fast+iters=40" in body  # 30 iters x 1.2, to the next 10
            assert "mean score 0.45" in body

            await pilot.press("t")  # apply from the advisor
            await wait_until(
                pilot, lambda: endpoint.health()["preset"] == "text_mv_fast+iters=40", timeout=30
            )
            await wait_until(
                pilot, lambda: table.cell_text(endpoint.port, "preset") == "text_mv_fast+iters=40"
            )
            # a restart keeps it (the supervisor records it once the switch has finished)
            spec = app.supervisor.endpoints[endpoint.port].spec
            await wait_until(pilot, lambda: spec.preset == "text_mv_fast+iters=40", timeout=30)

            # results measured under the new reference drive the next round (t on the main screen)
            await wait_until(pilot, lambda: endpoint.health()["status"] == "ready", timeout=30)
            for score in (0.5, 0.55):
                ledger.add(
                    replace(record("text_mv_fast+iters=40", 10.0, score), t=app.mining.controller.now())
                )
            await pilot.press("t")
            await wait_until(
                pilot, lambda: endpoint.health()["preset"] == "text_mv_fast+iters=50", timeout=30
            )
        finally:
            await app.supervisor.shutdown(stop_endpoints=False)
