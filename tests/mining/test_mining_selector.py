"""The shared validator selector: fairness, the owner's every fifth pull, skipping cooldowns."""

from __future__ import annotations

from collections import Counter

from console.mining.clock import ManualClock
from console.mining.selector import BUSY_MARK_S, Candidate, ValidatorSelector


def make(uids=(0, 12, 27, 49), owner: int | None = None, clock: ManualClock | None = None, **kw):
    clock = clock or ManualClock(start=10_000.0)
    cands = [Candidate(u, stake=5000.0) for u in uids]
    return ValidatorSelector(cands, clock, owner_uid=owner, **kw), clock


def pull_like_a_worker(sel: ValidatorSelector, clock: ManualClock) -> int | None:
    """Select and mark busy, as the miner's worker does before pulling."""
    s = sel.next()
    if s.uid is not None:
        sel.set_cooldown(s.uid, clock.now() + BUSY_MARK_S)
    return s.uid


def test_round_robin_is_fair_when_all_free_again() -> None:
    sel, clock = make()
    picks = []
    for _ in range(12):
        uid = pull_like_a_worker(sel, clock)
        picks.append(uid)
        if uid is None:  # everyone busy: wait for the marks to expire
            clock.advance(BUSY_MARK_S + 1)
    counts = Counter(p for p in picks if p is not None)
    assert set(counts) == {0, 12, 27, 49}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert picks[:4] == [0, 12, 27, 49]


def test_pointer_stays_until_the_validator_is_marked() -> None:
    sel, _ = make()
    assert sel.next().uid == 0
    assert sel.next().uid == 0  # not marked busy: the same one again, as the subnet's code does


def test_skips_validators_on_cooldown() -> None:
    sel, clock = make()
    sel.set_cooldown(0, clock.now() + 100)
    sel.set_cooldown(12, clock.now() + 100)
    assert pull_like_a_worker(sel, clock) == 27
    assert pull_like_a_worker(sel, clock) == 49
    assert sel.next().uid is None
    clock.advance(101)
    assert pull_like_a_worker(sel, clock) == 0


def test_cooldown_boundary_is_strict() -> None:
    sel, clock = make(uids=(5,))
    sel.set_cooldown(5, clock.now())
    assert sel.next().uid is None  # free only once cooldown_until < now
    clock.advance(0.5)
    assert sel.next().uid == 5


def test_owner_every_fifth_pull() -> None:
    sel, clock = make(uids=(12, 27, 49, 81, 133, 200, 201, 202, 203), owner=0)
    turns = []
    for _ in range(10):
        s = sel.next()
        turns.append(s.uid)
        if s.uid is not None and not s.owner_turn:
            sel.set_cooldown(s.uid, clock.now() + BUSY_MARK_S)
    # the owner (free throughout) gets pulls 5 and 10; the others share the rest in uid order
    assert turns == [12, 27, 49, 81, 0, 133, 200, 201, 202, 0]


def test_owner_turn_waits_while_owner_on_cooldown() -> None:
    sel, clock = make(uids=(12, 27, 49, 81, 133, 200), owner=0)
    sel.set_cooldown(0, clock.now() + 1000)
    owner_turns = 0
    for _ in range(6):
        s = sel.next()
        owner_turns += s.owner_turn
        if s.uid is not None:
            sel.set_cooldown(s.uid, clock.now() + BUSY_MARK_S)
    assert owner_turns == 0
    clock.advance(1001)
    # the countdown does not run while the owner is on cooldown: five more pulls to its turn
    turns = []
    for _ in range(5):
        s = sel.next()
        turns.append(s.owner_turn)
        if s.uid is not None and not s.owner_turn:
            sel.set_cooldown(s.uid, clock.now() + BUSY_MARK_S)
    assert turns == [False, False, False, False, True]


def test_min_stake_and_serving_filter() -> None:
    clock = ManualClock()
    cands = [Candidate(1, stake=999.0), Candidate(2, stake=5000.0, serving=False), Candidate(3, stake=1000.0)]
    sel = ValidatorSelector(cands, clock, min_stake=1000.0)
    assert pull_like_a_worker(sel, clock) == 3
    assert sel.next().uid is None


def test_shared_by_two_workers_never_gives_the_same_validator_twice() -> None:
    sel, clock = make(uids=(12, 27, 49))
    a = pull_like_a_worker(sel, clock)
    b = pull_like_a_worker(sel, clock)
    assert a != b and None not in (a, b)
