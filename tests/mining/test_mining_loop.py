"""The rehearsal miner loop on a compressed clock, with the endpoint answered in-process by a real
PLY (the end-to-end run against real `gen404 serve` processes is the Pilot test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from console.mining.clock import ScaledClock
from console.mining.events import FeedbackReceived, MiningEvent, Querying, TaskReceived
from console.mining.miner_loop import EndpointSpec, RehearsalMiner, load_prompts
from console.mining.scorers import GateOnlyScorer
from console.mining.validators import load_validators

SCALE = 600.0  # 300 s of cooldown in half a wall second


def endpoint(ply: bytes, status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/generate/"
        assert b"prompt=" in request.content  # the form field the miner sends
        if status != 200:
            return httpx.Response(status, json={"error": "boom"})
        return httpx.Response(200, content=ply, headers={"X-Preset": "smoke"})

    return httpx.MockTransport(handler)


def assigned_at(events: list[MiningEvent], fb: FeedbackReceived) -> float:
    """When the task this feedback answers was received (the latest from that validator)."""
    return max(e.t for e in events if isinstance(e, TaskReceived) and e.uid == fb.uid and e.t <= fb.t)


async def rehearse(prompts_file: Path, ply: bytes, wall_s: float, status: int = 200, **kw) -> tuple:
    events: list[MiningEvent] = []
    miner = RehearsalMiner(
        load_validators(),
        [EndpointSpec("http://a.test"), EndpointSpec("http://b.test")],
        load_prompts(prompts_file),
        GateOnlyScorer(),
        ScaledClock(SCALE),
        seed=1,
        on_event=events.append,
        transport=endpoint(ply, status),
        **kw,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(miner.run(stop))
    await asyncio.sleep(wall_s)
    stop.set()
    await task
    return miner, events


@pytest.fixture(scope="module")
def hamburger_ply(vectors_dir: Path) -> bytes:
    return (vectors_dir / "hamburger.ply").read_bytes()


async def test_rehearsal_serves_all_validators_by_the_rules(prompts_file: Path, hamburger_ply: bytes) -> None:
    miner, events = await rehearse(prompts_file, hamburger_ply, wall_s=2.5)
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    assert len(feedback) >= 8
    done = {uid: v.tasks_done for uid, v in miner.state.validators.items()}
    assert all(n >= 1 for n in done.values()), done
    assert done[49] > done[12]  # 120 s cooldown vs 300 s
    for fb in feedback:
        assert fb.outcome == "accepted" and fb.gate_only and fb.measured_score is None
        # fast tasks: the wait runs from the assignment, the throttle does not shorten it
        assigned = miner.sims[fb.uid].rules.task_cooldown
        assert fb.cooldown_until == pytest.approx(assigned_at(events, fb) + assigned, abs=1.0)
    assert all(v.violations == 0 for v in miner.state.validators.values())
    queries = [e for e in events if isinstance(e, Querying)]
    assert any(q.owner_turn for q in queries)
    prompts = set(load_prompts(prompts_file))
    assert all(fb.prompt in prompts for fb in feedback)
    state = miner.state
    now = miner.clock.now()
    assert state.ledger.accepted(now) == len(feedback)
    assert state.ledger.mean_score(now) is None and state.ledger.gate_only(now)


async def test_failing_endpoint_submits_empty_results_without_penalty(prompts_file: Path) -> None:
    miner, events = await rehearse(prompts_file, b"", wall_s=0.8, status=500)
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    assert feedback and all(fb.outcome == "empty" for fb in feedback)
    assert not any(v.penalised for v in miner.state.validators.values())
    assert miner.state.generation_errors >= len(feedback)


async def test_gate_failure_is_penalised(prompts_file: Path, vectors_dir: Path) -> None:
    small = (vectors_dir / "synth_sh3.ply").read_bytes()  # 1000 splats: fails the validity gate
    miner, events = await rehearse(prompts_file, small, wall_s=0.8)
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    assert feedback and all(fb.outcome == "rejected" for fb in feedback)
    for fb in feedback:
        cd = miner.sims[fb.uid].rules.task_cooldown
        assert fb.cooldown_until == pytest.approx(assigned_at(events, fb) + cd + 600, abs=1.0)
    assert any(v.status(miner.clock.now()) == "penalised" for v in miner.state.validators.values())


async def test_emulated_task_time_is_charged_against_the_throttle(
    prompts_file: Path, hamburger_ply: bytes
) -> None:
    miner, events = await rehearse(
        prompts_file, hamburger_ply, wall_s=1.0, task_time=lambda preset, wall: 90.0
    )
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    assert feedback
    for fb in feedback:
        cd = miner.sims[fb.uid].rules.task_cooldown
        assert fb.gen_time_s == 90.0
        assert fb.cooldown_until == pytest.approx(assigned_at(events, fb) + 90 + cd - 30, abs=1.0)
