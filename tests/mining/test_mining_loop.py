"""The rehearsal miner loop on a compressed clock, with the endpoint answered in-process by a real
PLY (the end-to-end run against real `gen404 serve` processes is the Pilot test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from console.mining.clock import ScaledClock
from console.mining.events import (
    AveragesReported,
    FeedbackReceived,
    MiningEvent,
    PullFailed,
    Querying,
    SubmitFailed,
    TaskReceived,
)
from console.mining.miner_loop import EndpointSpec, RehearsalMiner, load_prompts
from console.mining.scorers import GateOnlyScorer
from console.mining.validators import load_validators, parse_validators

SCALE = 600.0  # 300 s of cooldown in half a wall second


def endpoint(ply: bytes, status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/generate/"
        assert b"prompt=" in request.content  # the form field the miner sends
        if status != 200:
            return httpx.Response(status, json={"error": "boom"})
        if len(request.content) > 4096:  # an image task's base64: refused, as gen404 serve does
            return httpx.Response(422, json={"error": "image prompts are not supported by preset smoke"})
        return httpx.Response(200, content=ply, headers={"X-Preset": "smoke"})

    return httpx.MockTransport(handler)


def assigned_at(events: list[MiningEvent], fb: FeedbackReceived) -> float:
    """When the task this feedback answers was received (the latest from that validator)."""
    return max(e.t for e in events if isinstance(e, TaskReceived) and e.uid == fb.uid and e.t <= fb.t)


async def rehearse(
    prompts_file: Path, ply: bytes, wall_s: float, status: int = 200, validators=None, **kw
) -> tuple:
    events: list[MiningEvent] = []
    miner = RehearsalMiner(
        validators or load_validators(),
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
        # image tasks: the endpoint refuses them, the miner submits an empty result (plain cooldown)
        assert fb.outcome == ("empty" if fb.image else "accepted")
        assert fb.image or (fb.gate_only and fb.measured_score is None)
        # fast tasks: the wait runs from the assignment, the throttle does not shorten it
        assigned = miner.sims[fb.uid].rules.task_cooldown
        assert fb.cooldown_until == pytest.approx(assigned_at(events, fb) + assigned, abs=1.0)
    assert all(v.violations == 0 for v in miner.state.validators.values())
    queries = [e for e in events if isinstance(e, Querying)]
    assert any(q.owner_turn for q in queries)
    prompts = set(load_prompts(prompts_file))
    # text tasks carry a prompt from the file; image tasks are shown by their log id, never the base64
    assert all(fb.prompt in prompts for fb in feedback if not fb.image)
    assert all(fb.prompt.startswith("image:") for fb in feedback if fb.image)
    state = miner.state
    now = miner.clock.now()
    assert state.ledger.accepted(now) == sum(not fb.image for fb in feedback)
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
    assert feedback and all(fb.outcome == "rejected" for fb in feedback if not fb.image)
    for fb in feedback:
        if fb.image:
            continue
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


async def test_image_tasks_and_duels_in_the_rehearsal(prompts_file: Path, hamburger_ply: bytes) -> None:
    """Image tasks come at the code's ratio and, refused by the endpoint, go in empty: plain cooldown,
    and a lost duel when the task was a duel. Every feedback is followed by that validator's view."""
    vs = parse_validators(
        {
            "defaults": {"task_cooldown": 60, "duel_share": 1.0, "duel_win_rate": 1.0},
            "validators": [{"uid": u} for u in range(8)],
        }
    )
    miner, events = await rehearse(prompts_file, hamburger_ply, wall_s=2.5, validators=vs)
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    images = [fb for fb in feedback if fb.image]
    assert images and len(images) < len(feedback)
    assert all(fb.outcome == "empty" and fb.duel == "lost" for fb in images)
    assert all(fb.outcome == "accepted" and fb.duel == "won" for fb in feedback if not fb.image)
    averages = [e for e in events if isinstance(e, AveragesReported)]
    assert len(averages) == len(feedback) and all(a.uid is not None for a in averages)
    for fb in feedback:  # the reward each validator reports is its accepted count x its rating
        a = next(x for x in averages if x.uid == fb.uid and x.t >= fb.t)
        assert a.reward == pytest.approx(a.accepted * a.rating) and a.rating == fb.rating
    state = miner.state
    assert state.image_tasks >= len(images)
    assert all(v.reported is not None for v in state.validators.values() if v.tasks_done)


async def test_failed_pulls_and_submits_make_the_miner_skip_300s(
    prompts_file: Path, hamburger_ply: bytes
) -> None:
    vs = parse_validators(
        {
            "defaults": {"pull_failure_rate": 0.3, "submit_failure_rate": 0.3, "text_tasks_ratio": 1.0},
            "validators": [{"uid": u} for u in range(6)],
        }
    )
    miner, events = await rehearse(prompts_file, hamburger_ply, wall_s=2.0, validators=vs)
    failures = [e for e in events if isinstance(e, (PullFailed, SubmitFailed))]
    assert any(isinstance(e, PullFailed) for e in failures) and any(
        isinstance(e, SubmitFailed) for e in failures
    )
    for ev in failures:
        assert ev.uid is not None
        queried_again = [q.t for q in events if isinstance(q, Querying) and q.uid == ev.uid and q.t > ev.t]
        if queried_again:  # not before the miner's own 300 s skip ran out
            assert min(queried_again) >= ev.t + 300 - 1.0
    assert miner.state.submit_failures == sum(isinstance(e, SubmitFailed) for e in failures)
    lost = [r for r in miner.state.recent if r.outcome == "submit_failed"]
    assert len(lost) == miner.state.submit_failures
