"""The reward ledger's 4-hour window, its rates, and the seed guide's projection."""

from __future__ import annotations

import pytest

from console.mining.ledger import Ledger, ResultRecord, project
from console.mining.rules import ValidatorRules

H = 3600.0


def rec(
    t: float, score: float | None, accepted: bool, preset: str = "fast", gen: float = 20.0, **kw
) -> ResultRecord:
    outcome = kw.pop("outcome", "accepted" if accepted else "rejected")
    return ResultRecord(t, 12, "p", "http://e", preset, gen, score, accepted, outcome, **kw)


def test_window_keeps_exactly_the_last_four_hours() -> None:
    led = Ledger()
    now = 100 * H
    led.add(rec(now - 4 * H - 1, 0.9, True))  # just outside
    led.add(rec(now - 4 * H, 0.8, True))  # on the edge: inside, like the validator's expiry
    led.add(rec(now - 60, 0.7, True))
    led.add(rec(now - 30, 0.3, False))
    assert led.accepted(now) == 2
    assert len(led.window(now)) == 3
    assert led.mean_score(now) == pytest.approx((0.8 + 0.7 + 0.3) / 3)
    assert led.acceptance_rate(now) == pytest.approx(2 / 3)
    assert led.accepted(now + 4 * H - 59) == 0  # all but the last rejected one aged out


def test_gate_only_results_have_no_score_and_are_flagged() -> None:
    led = Ledger()
    led.add(rec(10.0, None, True, gate_only=True))
    assert led.mean_score(20.0) is None
    assert led.gate_only(20.0)
    assert led.accepted(20.0) == 1


def test_missed_windows_age_out_too() -> None:
    led = Ledger()
    led.note_missed(0.0, 49)
    led.note_missed(2 * H, 12)
    assert led.missed_windows(3 * H) == 2
    assert led.missed_windows(4 * H + 1) == 1


def test_projection_matches_the_seed_guide_for_one_300s_validator() -> None:
    # one standard validator, fast generations: 14400 / 300 = 48 per 4 h; 0.70 x 48 = 33.6
    p = project(25.0, [ValidatorRules()], endpoints=1, score=0.70)
    assert p.generations_4h == pytest.approx(48.0)
    assert p.guide_reward == pytest.approx(33.6)
    assert p.limited_by == "validators"


def test_projection_charges_throttle_overrun_and_penalties() -> None:
    slow = project(150.0, [ValidatorRules()], endpoints=1, score=0.8)
    assert slow.generations_4h == pytest.approx(14400 / (300 + 120))
    half_rejected = project(25.0, [ValidatorRules()], endpoints=1, acceptance=0.5, score=0.62)
    assert half_rejected.generations_4h == pytest.approx(14400 / (300 + 300))
    assert half_rejected.accepted_4h == pytest.approx(half_rejected.generations_4h / 2)


def test_projection_is_endpoint_bound_when_validators_outnumber_capacity() -> None:
    rules = [ValidatorRules(task_cooldown=120)] + [ValidatorRules()] * 5
    p = project(60.0, rules, endpoints=1)
    assert p.limited_by == "endpoints"
    assert p.generations_4h == pytest.approx(14400 / 60)
    two = project(60.0, rules, endpoints=2)
    assert two.generations_4h > p.generations_4h


def test_per_preset_projections_from_measurements() -> None:
    led = Ledger()
    for i in range(4):
        led.add(rec(100.0 + i, 0.7, True, preset="fast", gen=25.0))
        led.add(rec(100.0 + i, 0.8, i < 2, preset="quality", gen=150.0))
    out = led.projections(200.0, [ValidatorRules()], endpoints=1)
    assert out["fast"].guide_reward == pytest.approx(0.7 * 48)
    assert out["quality"].acceptance == pytest.approx(0.5)
    assert out["quality"].guide_reward < out["fast"].guide_reward


def test_refused_image_tasks_project_no_preset() -> None:
    led = Ledger()
    led.add(rec(100.0, 0.7, True, preset="fast", gen=25.0))
    # an image task the endpoint refused at once: no preset, a few milliseconds, nothing accepted
    led.add(rec(101.0, None, False, preset=None, gen=0.004, image=True, outcome="empty"))
    out = led.projections(200.0, [ValidatorRules()], endpoints=1)
    assert set(out) == {"fast"}
    assert led.accepted(200.0) == 1 and len(led.window(200.0)) == 2
