"""MiningState: missed windows (validators free while every endpoint is busy) and busy expiry."""

from __future__ import annotations

from console.mining.events import FeedbackReceived, Querying, TaskReceived, WorkerStarted
from console.mining.live import live_state
from console.mining.state import MiningState


def busy_two(state: MiningState) -> None:
    for ep in ("http://a", "http://b"):
        state.apply(WorkerStarted(0.0, ep))
    state.add_validator(49)
    state.apply(Querying(1.0, 12))
    state.apply(TaskReceived(1.1, 12, "p1"))
    state.apply(Querying(2.0, 27))
    state.apply(TaskReceived(2.1, 27, "p2"))


def test_missed_window_counted_once_per_free_interval_past_the_throttle() -> None:
    state = MiningState()
    busy_two(state)
    state.observe_capacity(3.0)
    state.observe_capacity(20.0)
    assert state.ledger.missed_windows(20.0) == 0  # 49 waited 17 s: under the throttle period
    state.observe_capacity(33.0)
    state.observe_capacity(40.0)  # still the same interval
    assert state.ledger.missed_windows(40.0) == 1
    state.apply(FeedbackReceived(45.0, 12, "p1", 0.8))  # an endpoint frees up
    state.observe_capacity(45.0)
    state.apply(Querying(46.0, 49))  # and takes 49 (12 now cools down)
    state.apply(TaskReceived(46.1, 49, "p3"))
    state.observe_capacity(46.2)
    assert state.ledger.missed_windows(46.2) == 1  # nobody free while all busy
    state.apply(FeedbackReceived(500.0, 27, "p2", 0.8))
    state.apply(Querying(501.0, 27))
    state.apply(TaskReceived(501.0, 27, "p4"))
    state.observe_capacity(1000.0)  # 12's cooldown ran out while both endpoints are busy
    state.observe_capacity(1031.0)
    assert state.ledger.missed_windows(1031.0) == 2


def test_no_missed_window_while_an_endpoint_is_idle() -> None:
    state = MiningState()
    state.apply(WorkerStarted(0.0, "http://a"))
    state.apply(WorkerStarted(0.0, "http://b"))
    state.add_validator(49)
    state.apply(Querying(1.0, 12))
    state.observe_capacity(2.0)
    assert state.ledger.missed_windows(2.0) == 0


def test_live_busy_mark_expires_like_the_miners() -> None:
    state = live_state()
    state.apply(Querying(0.0, 12))  # no answer ever attributed to it
    assert state.validators[12].status(299.0) == "busy"
    assert state.validators[12].status(301.0) == "ready"
