"""Duels, guards and task kinds as the subnet's validator has them (three-gen-subnet at 5fc61f1).

Constants are the code's: neurons/validator/duels/ratings.py (Glicko2Rating defaults 1500/350/0.5,
clamps), neurons/validator/config.py (validation_lock_duration 30, text_tasks_ratio 0.8),
neurons/validator/validator.py (_validate_results: lock, too-quickly, threshold; every failure goes
through _process_task_failure -> fail_task, i.e. a lost duel), miner_data.py (reward = accepted x rating).
"""

from __future__ import annotations

import random

import pytest

from console.mining import glicko
from console.mining.clock import ManualClock
from console.mining.rules import Outcome, SimulatedValidator, ValidatorRules


def test_glicko_defaults_and_clamps_are_the_validators() -> None:
    fresh = glicko.Glicko()
    assert (fresh.rating, fresh.rd, fresh.vol) == (1500.0, 350.0, 0.5)  # ratings.py Glicko2Rating
    assert (glicko.MIN_RATING, glicko.MAX_RATING) == (0.0, 3000.0)
    assert (glicko.MIN_RD, glicko.MAX_RD, glicko.MIN_VOL, glicko.MAX_VOL) == (30.0, 350.0, 0.03, 0.2)


# Expected values computed with the glicko2 2.1.0 package the validator pins (neurons/requirements.txt),
# Player(rating, rd, vol).update_player([opp rating], [opp rd], [score]) for each side, then the
# validator's clamps (ratings.update_glicko2).
PACKAGE_VECTORS = [
    # left, right, left's score, left after (rating, rd), right after (rating, rd)
    ((1500, 350, 0.5), (1500, 350, 0.5), 1.0, (1668.951232, 296.198088), (1331.048768, 296.198088)),
    ((1500, 350, 0.5), (1500, 350, 0.5), 0.5, (1500.0, 296.179001), (1500.0, 296.179001)),
    ((1620.5, 80.0, 0.06), (1480.0, 120.0, 0.09), 0.0, (1597.612554, 79.073181), (1531.082651, 115.481975)),
    ((1400, 30, 0.03), (1700, 200, 0.2), 1.0, (1403.643243, 30.39839), (1529.478192, 187.321915)),
]


@pytest.mark.parametrize(("left", "right", "score", "left_after", "right_after"), PACKAGE_VECTORS)
def test_duel_update_matches_the_package(left, right, score, left_after, right_after) -> None:  # type: ignore[no-untyped-def]
    a, b = glicko.duel(glicko.Glicko(*left), glicko.Glicko(*right), score)
    assert (a.rating, a.rd) == pytest.approx(left_after, abs=1e-5)
    assert (b.rating, b.rd) == pytest.approx(right_after, abs=1e-5)
    assert glicko.MIN_VOL <= a.vol <= glicko.MAX_VOL  # vol 0.5 start is clamped after the first duel


def test_the_package_quirk_is_kept() -> None:
    # Glickman's paper example (1500/200/0.06 vs 1400/30 W, 1550/100 L, 1700/300 L) is three games;
    # here one game where mu != 0 makes the package's mu^2 (not phi^2) matter for the volatility
    p = glicko.update(glicko.Glicko(1620.5, 80.0, 0.06), glicko.Glicko(1480.0, 120.0, 0.09), 0.0)
    assert p.vol == pytest.approx(0.060002, abs=1e-6)


def duel_validator(clock: ManualClock, **rules: float) -> SimulatedValidator:
    r = ValidatorRules(duel_share=1.0, **rules)  # every task a duel
    return SimulatedValidator(uid=7, rules=r, clock=clock, rng=random.Random(1))


@pytest.mark.parametrize(
    ("result", "score", "signature_ok", "outcome"),
    [
        (b"", None, True, Outcome.EMPTY),
        (b"x", 0.59, True, Outcome.REJECTED),
        (b"x", 0.9, False, Outcome.BAD_SIGNATURE),
        (b"x", None, True, Outcome.VALIDATION_FAILED),
    ],
)
def test_every_failure_path_is_a_lost_duel(
    result: bytes, score: float | None, signature_ok: bool, outcome: Outcome
) -> None:
    clock = ManualClock(start=1_000_000.0)
    v = duel_validator(clock)
    task = v.pull("a chair").task
    assert task is not None and task.duel
    clock.advance(20)
    sub = v.submit(task.id, result, score, signature_ok=signature_ok)
    assert sub.outcome is outcome and sub.duel == "lost"
    assert sub.rating < 1500.0  # an empty result is not free: it costs rating, which multiplies reward
    assert sub.rating == pytest.approx(glicko.duel(glicko.Glicko(), glicko.Glicko(), glicko.LOSS)[0].rating)


def test_accepted_duel_goes_to_the_judge_and_reward_is_accepted_times_rating() -> None:
    clock = ManualClock(start=1_000_000.0)
    v = duel_validator(clock, duel_win_rate=1.0)
    task = v.pull("a chair").task
    assert task is not None
    clock.advance(20)
    sub = v.submit(task.id, b"x", 0.8)
    assert sub.accepted and sub.duel == "won" and sub.rating > 1500.0
    assert sub.reward == pytest.approx(1 * sub.rating)  # miner_data.calculate_reward


def test_validation_lock_answers_zero_and_changes_nothing() -> None:
    clock = ManualClock(start=1_000_000.0)
    v = SimulatedValidator(uid=7, rules=ValidatorRules(), clock=clock)
    task = v.pull("a chair").task
    assert task is not None
    v.miner.validation_locked_until = clock.now() + 30  # a validation of ours is still running
    before = (v.miner.cooldown_until, v.miner.tasks_done)
    sub = v.submit(task.id, b"x", 0.9)
    assert sub.outcome is Outcome.VALIDATION_LOCKED and sub.score == 0.0
    assert (v.miner.cooldown_until, v.miner.tasks_done) == before and v.miner.assigned is task
    clock.advance(31)
    assert v.submit(task.id, b"x", 0.9).accepted  # the same task, after the lock: validated


def test_resubmitted_too_quickly_answers_zero_and_keeps_the_task() -> None:
    clock = ManualClock(start=1_000_000.0)
    v = SimulatedValidator(uid=7, rules=ValidatorRules(task_cooldown=300, throttle_period=30), clock=clock)
    t1 = v.pull("a").task
    assert t1 is not None and v.submit(t1.id, b"x", 0.9).accepted
    v.miner.cooldown_until = clock.now()  # e.g. a validator restarted with a shorter cooldown
    clock.advance(100)  # under 300 - 30 s after the accepted submit
    t2 = v.pull("b").task
    assert t2 is not None
    sub = v.submit(t2.id, b"x", 0.9)
    assert sub.outcome is Outcome.RESUBMITTED_TOO_QUICKLY and sub.score == 0.0
    assert v.miner.assigned is t2 and sub.accepted_in_window == 1


def test_image_tasks_come_at_the_codes_ratio() -> None:
    clock = ManualClock(start=1_000_000.0)
    rules = ValidatorRules(task_cooldown=0, throttle_period=0)
    assert rules.text_tasks_ratio == 0.8  # config.py --task.synthetic.text_tasks_ratio
    v = SimulatedValidator(uid=7, rules=rules, clock=clock, rng=random.Random(3), image_prompt="iVBORw0KGgo=")
    images = 0
    for i in range(2000):
        task = v.pull(f"p{i}").task
        assert task is not None
        images += task.image
        assert (task.prompt == "iVBORw0KGgo=") == task.image
        v.submit(task.id, b"", None)
        clock.advance(1)
    assert 0.17 < images / 2000 < 0.23
