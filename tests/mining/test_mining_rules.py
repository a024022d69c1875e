"""Every rule of 404-reference section 4, on a simulated validator driven by a manual clock."""

from __future__ import annotations

import pytest

from console.mining.clock import ManualClock
from console.mining.rules import Outcome, SimulatedValidator, ValidatorRules, cooldown_until

RULES = ValidatorRules()  # subnet defaults: 300 s cooldown, 30 s throttle, 0.6, 600 s penalty


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000_000.0)


@pytest.fixture
def validator(clock: ManualClock) -> SimulatedValidator:
    return SimulatedValidator(uid=12, rules=RULES, clock=clock)


def run_task(
    v: SimulatedValidator, clock: ManualClock, took: float, score: float | None, result: bytes = b"x"
):
    pull = v.pull("a red chair")
    assert pull.task is not None
    clock.advance(took)
    return pull, v.submit(pull.task.id, result, score)


def test_formula_is_the_validators() -> None:
    assert cooldown_until(100.0, 90.0, 300.0, 30.0) == max(100 + 300 - 30, 90 + 300)
    assert cooldown_until(100.0, None, 300.0, 30.0) == 400.0


def test_fast_task_does_not_shorten_the_wait(validator: SimulatedValidator, clock: ManualClock) -> None:
    pull, sub = run_task(validator, clock, took=5.0, score=0.8)
    assert sub.outcome is Outcome.ACCEPTED
    # finished 5 s after assignment: assigned_at + 300, not now + 270
    assert sub.cooldown_until == pull.task.assigned_at + 300
    assert sub.cooldown_until - clock.now() == 295


def test_slow_task_past_the_throttle_waits_cooldown_minus_throttle(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    pull, sub = run_task(validator, clock, took=90.0, score=0.8)
    assert sub.cooldown_until == clock.now() + 270  # now + 300 - 30
    assert sub.cooldown_until == pull.task.assigned_at + 360  # overran the throttle by 60 s


def test_task_exactly_at_throttle_is_the_break_even(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    pull, sub = run_task(validator, clock, took=30.0, score=0.8)
    assert sub.cooldown_until == pull.task.assigned_at + 300 == clock.now() + 270


def test_low_score_adds_the_600s_penalty(validator: SimulatedValidator, clock: ManualClock) -> None:
    pull, sub = run_task(validator, clock, took=10.0, score=0.59)
    assert sub.outcome is Outcome.REJECTED and not sub.accepted
    assert sub.score == 0.0  # the validator reports 0.0 for a rejected result
    assert sub.cooldown_until == pull.task.assigned_at + 900
    assert validator.miner.penalised
    assert sub.accepted_in_window == 0


def test_threshold_is_inclusive(validator: SimulatedValidator, clock: ManualClock) -> None:
    _, sub = run_task(validator, clock, took=10.0, score=0.6)
    assert sub.accepted and sub.score == 0.6


def test_bad_signature_is_penalised_and_keeps_violations(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    validator.miner.violations = 7
    pull = validator.pull("p")
    clock.advance(40)
    sub = validator.submit(pull.task.id, b"x", 0.9, signature_ok=False)
    assert sub.outcome is Outcome.BAD_SIGNATURE
    assert sub.cooldown_until == clock.now() + 900 - 30
    assert sub.violations == 7


def test_empty_result_costs_plain_cooldown_no_penalty(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    pull, sub = run_task(validator, clock, took=50.0, score=None, result=b"")
    assert sub.outcome is Outcome.EMPTY
    assert sub.cooldown_until == clock.now() + 270
    assert not validator.miner.penalised


def test_validation_failure_costs_plain_cooldown(validator: SimulatedValidator, clock: ManualClock) -> None:
    _, sub = run_task(validator, clock, took=50.0, score=None)
    assert sub.outcome is Outcome.VALIDATION_FAILED
    assert sub.cooldown_until == clock.now() + 270


def test_pull_on_cooldown_counts_a_violation_and_gives_no_task(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    _, sub = run_task(validator, clock, took=10.0, score=0.9)
    until = sub.cooldown_until
    refused = validator.pull("again")
    assert refused.task is None
    assert refused.violations == 1
    assert refused.cooldown_until == until  # at or below 100 violations: no extra time


def test_past_100_violations_each_adds_10s(validator: SimulatedValidator, clock: ManualClock) -> None:
    _, sub = run_task(validator, clock, took=10.0, score=0.9)
    until = sub.cooldown_until
    for _ in range(100):
        validator.pull("spam")
    assert validator.miner.violations == 100
    assert validator.miner.cooldown_until == until  # the 100th is still free
    r101 = validator.pull("spam")
    assert r101.violations == 101 and r101.cooldown_until == until + 10
    r102 = validator.pull("spam")
    assert r102.cooldown_until == until + 20


def test_accepted_submit_decrements_violations(validator: SimulatedValidator, clock: ManualClock) -> None:
    validator.miner.violations = 3
    _, sub = run_task(validator, clock, took=10.0, score=0.9)
    assert sub.violations == 2
    validator.miner.violations = 0
    clock.advance(400)
    _, sub = run_task(validator, clock, took=10.0, score=0.9)
    assert sub.violations == 0  # never below zero


def test_pull_after_cooldown_gets_a_task_and_repeat_pull_returns_same_task(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    _, sub = run_task(validator, clock, took=10.0, score=0.9)
    clock.set(sub.cooldown_until + 0.001)
    first = validator.pull("new")
    again = validator.pull("other")
    assert first.task is not None and again.task == first.task
    assert validator.miner.violations == 0


def test_uid49_style_short_cooldown(clock: ManualClock) -> None:
    v = SimulatedValidator(uid=49, rules=ValidatorRules(task_cooldown=120), clock=clock)
    pull, sub = run_task(v, clock, took=10.0, score=0.7)
    assert sub.cooldown_until == pull.task.assigned_at + 120


def test_only_accepted_results_count_in_the_4h_window(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    _, first = run_task(validator, clock, took=10.0, score=0.9)
    clock.set(first.cooldown_until + 1)
    _, second = run_task(validator, clock, took=10.0, score=0.1)
    assert second.accepted_in_window == 1
    assert second.reward == 1500.0
    clock.advance(4 * 3600)
    assert validator.accepted_in_window() == 0


def test_wrong_task_id_changes_nothing(validator: SimulatedValidator, clock: ManualClock) -> None:
    pull = validator.pull("p")
    sub = validator.submit("nope", b"x", 0.9)
    assert sub.outcome is Outcome.WRONG_TASK
    assert validator.miner.assigned == pull.task


def test_finished_at_lets_a_compressed_rehearsal_charge_the_real_duration(
    validator: SimulatedValidator, clock: ManualClock
) -> None:
    pull = validator.pull("p")
    clock.advance(200)  # the scaled clock ran far while a 90 s task was generating
    sub = validator.submit(pull.task.id, b"x", 0.9, finished_at=pull.task.assigned_at + 90)
    assert sub.cooldown_until == pull.task.assigned_at + 90 + 270
