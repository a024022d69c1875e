"""Mining events: what the rehearsal loop emits and what the live log follower reads from the miner's log.

Times are unix seconds on the source's clock (the rehearsal's clock, or the log's timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerStarted:
    t: float
    endpoint: str


@dataclass(frozen=True)
class Querying:
    t: float
    uid: int | None  # None: the subnet owner's turn, uid not logged
    stake: float | None = None
    owner_turn: bool = False


@dataclass(frozen=True)
class NoValidators:
    t: float


@dataclass(frozen=True)
class PullRefused:
    """The validator answered 'on cooldown' (or the pull failed): no task."""

    t: float
    uid: int | None
    cooldown_until: float | None
    violations: int | None = None
    reason: str = "cooldown"


@dataclass(frozen=True)
class TaskReceived:
    t: float
    uid: int | None
    prompt: str
    endpoint: str | None = None


@dataclass(frozen=True)
class GenerationDone:
    t: float
    uid: int | None
    prompt: str | None
    endpoint: str | None
    ok: bool
    time_s: float | None = None
    size: int | None = None
    preset: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FeedbackReceived:
    """A validator's answer to a submit.

    `score` is the feedback's task score (None when it says 'failed'); `measured_score` is what our
    scorer measured (rehearsal only; the validator reports 0.0 for a rejected result).
    `cooldown_until` is None when the source does not say (live logs): the state estimates it.
    """

    t: float
    uid: int
    prompt: str | None
    score: float | None
    outcome: str | None = None
    cooldown_until: float | None = None
    violations: int | None = None
    endpoint: str | None = None
    preset: str | None = None
    gen_time_s: float | None = None
    measured_score: float | None = None
    gate_only: bool = False
    gate_passed: bool | None = None


@dataclass(frozen=True)
class AveragesReported:
    t: float
    average: float
    accepted: int
    reward: float
    rating: float | None = None
    window_h: int = 4


@dataclass(frozen=True)
class MinerStatus:
    t: float
    uid: int
    block: int
    stake: float
    trust: float
    incentive: float
    emission: float


@dataclass(frozen=True)
class PullFailed:
    t: float
    validator: str  # hotkey (the miner logs the hotkey, not the uid)
    reason: str


MiningEvent = (
    WorkerStarted
    | Querying
    | NoValidators
    | PullRefused
    | TaskReceived
    | GenerationDone
    | FeedbackReceived
    | AveragesReported
    | MinerStatus
    | PullFailed
)
