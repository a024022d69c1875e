"""The validator side of the subnet's task economics (404-reference section 4), one miner's view.

Mirrors the subnet validator's rules (three-gen-subnet `neurons/validator`, defaults):
- a pull while on cooldown counts a violation; past `violations_threshold` (100) each one also
  pushes `cooldown_until` out by `violation_penalty` (10 s); no task is given;
- a task ends with `cooldown_until = max(now + cooldown - throttle, assigned_at + cooldown)`,
  so finishing faster than the throttle period (30 s) does not shorten the wait;
- a bad signature, or a score below `quality_threshold` (0.6), adds `cooldown_penalty` (600 s)
  to the cooldown in that formula; an empty result costs the plain cooldown and no penalty;
  a validation failure (the validator could not score) costs the plain cooldown too;
- every submit whose signature verifies decrements the violation count (the validator does this
  before looking at the result); only accepted results enter the 4-hour observation window.
The feedback of a rejected result carries score 0.0, as the real validator's does.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from console.mining.clock import Clock

FOUR_HOURS = 4 * 60 * 60


@dataclass(frozen=True)
class ValidatorRules:
    task_cooldown: float = 300.0
    throttle_period: float = 30.0
    quality_threshold: float = 0.6
    cooldown_penalty: float = 600.0
    violation_penalty: float = 10.0
    violations_threshold: int = 100
    observation_window: float = FOUR_HOURS
    moving_average_alpha: float = 0.05


def cooldown_until(now: float, assigned_at: float | None, cooldown: float, throttle: float) -> float:
    """The validator's formula; with no assignment on record the plain `now + cooldown`."""
    if assigned_at is None:
        return now + cooldown
    return max(now + cooldown - throttle, assigned_at + cooldown)


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # score below the threshold: +penalty
    EMPTY = "empty"  # empty result: plain cooldown, no penalty
    BAD_SIGNATURE = "bad_signature"  # +penalty, violations not decremented
    VALIDATION_FAILED = "validation_failed"  # the validator could not score: plain cooldown
    WRONG_TASK = "wrong_task"  # no task assigned or another id: nothing changes


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    validator_uid: int
    assigned_at: float


@dataclass(frozen=True)
class PullResponse:
    task: Task | None
    cooldown_until: float
    violations: int


@dataclass(frozen=True)
class SubmitResponse:
    outcome: Outcome
    score: float  # the feedback's task score: 0.0 unless accepted (as the validator reports it)
    cooldown_until: float
    violations: int
    average_score: float
    accepted_in_window: int
    reward: float

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


@dataclass
class MinerRecord:
    """What one validator remembers about our miner."""

    assigned: Task | None = None
    cooldown_until: float = 0.0
    violations: int = 0
    fidelity: float = 1.0
    observations: deque[float] = field(default_factory=deque)
    tasks_done: int = 0
    penalised: bool = False  # the latest cooldown carries a penalty


class SimulatedValidator:
    """One validator's task and cooldown rules, driven by an injectable clock."""

    _ids = itertools.count(1)

    def __init__(self, uid: int, rules: ValidatorRules, clock: Clock, rating: float = 1500.0) -> None:
        self.uid = uid
        self.rules = rules
        self.clock = clock
        self.rating = rating
        self.miner = MinerRecord()
        self._finished_at: float | None = None

    def on_cooldown(self) -> bool:
        return self.clock.now() < self.miner.cooldown_until

    def pull(self, prompt: str) -> PullResponse:
        m = self.miner
        now = self.clock.now()
        if now < m.cooldown_until:
            m.violations += 1
            if m.violations > self.rules.violations_threshold:
                m.cooldown_until += self.rules.violation_penalty
            return PullResponse(None, m.cooldown_until, m.violations)
        if m.assigned is not None:  # the validator hands the same task again
            return PullResponse(m.assigned, m.cooldown_until, m.violations)
        m.assigned = Task(f"{self.uid}-{next(self._ids)}", prompt, self.uid, now)
        return PullResponse(m.assigned, m.cooldown_until, m.violations)

    def submit(
        self,
        task_id: str,
        result: bytes,
        score: float | None,
        signature_ok: bool = True,
        finished_at: float | None = None,
    ) -> SubmitResponse:
        """`score` is the validation score of `result`; None means the validation failed.

        `finished_at` (default: now) is when the task counts as done for the cooldown formula: a
        time-compressed rehearsal passes `assigned_at + the task's real duration` so a validator
        judges the task by how long it really took, not by the scaled clock.
        """
        m, r = self.miner, self.rules
        self._finished_at = finished_at
        if m.assigned is None or m.assigned.id != task_id:
            return self._feedback(Outcome.WRONG_TASK, 0.0)
        if not signature_ok:
            return self._fail(Outcome.BAD_SIGNATURE, r.cooldown_penalty)
        m.violations = max(0, m.violations - 1)
        if not result:
            return self._fail(Outcome.EMPTY, 0.0)
        if score is None:
            return self._fail(Outcome.VALIDATION_FAILED, 0.0)
        if score < r.quality_threshold:
            return self._fail(Outcome.REJECTED, r.cooldown_penalty)
        now = self._now()
        fidelity = min(1.0, score)
        self._reset_task(r.task_cooldown)
        m.observations.append(now)
        m.fidelity = m.fidelity * (1 - r.moving_average_alpha) + r.moving_average_alpha * fidelity
        return self._feedback(Outcome.ACCEPTED, fidelity)

    def _now(self) -> float:
        return self._finished_at if self._finished_at is not None else self.clock.now()

    def accepted_in_window(self) -> int:
        horizon = self.clock.now() - self.rules.observation_window
        obs = self.miner.observations
        while obs and obs[0] < horizon:
            obs.popleft()
        return len(obs)

    def _reset_task(self, cooldown: float) -> None:
        m = self.miner
        assigned_at = m.assigned.assigned_at if m.assigned else None
        m.cooldown_until = cooldown_until(self._now(), assigned_at, cooldown, self.rules.throttle_period)
        m.penalised = cooldown > self.rules.task_cooldown
        m.assigned = None
        m.tasks_done += 1

    def _fail(self, outcome: Outcome, penalty: float) -> SubmitResponse:
        self._reset_task(self.rules.task_cooldown + penalty)
        return self._feedback(outcome, 0.0)

    def _feedback(self, outcome: Outcome, score: float) -> SubmitResponse:
        window = self.accepted_in_window()
        return SubmitResponse(
            outcome=outcome,
            score=score,
            cooldown_until=self.miner.cooldown_until,
            violations=self.miner.violations,
            average_score=self.miner.fidelity,
            accepted_in_window=window,
            reward=window * self.rating,
        )
