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
  before looking at the result); only accepted results enter the 4-hour observation window;
- guards that answer 0.0 and change no cooldown: a submit during the 30 s validation lock
  (`validation_lock_duration`, set by every validation), a result resubmitted within
  `cooldown - throttle` of the last accepted one, and a submit for a task that is not assigned;
- tasks: `text_tasks_ratio` (0.8) of them are text, the rest image-to-3D (the base64 image in
  `prompt`); a share of tasks (`duel_share`, configurable: the code has no fixed share, duels are
  paired from active miners and judged at most 6 a minute) are duels against another miner: every
  failure path (empty, below 0.6, bad signature, validation failure) is a lost duel, and when both
  delivered a judge picks the worse (`duel_win_rate`, our assumption); the duel rating (Glicko-2,
  console/mining/glicko.py) multiplies the reward: accepted in 4 h x rating.
The feedback of every result not accepted carries score 0.0, as the real validator's does.
Sources: three-gen-subnet at 5fc61f1, neurons/validator/validator.py (submit_results,
_validate_results), config.py (defaults), miner_data.py, duels/duels_task_storage.py, duels/ratings.py.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from console.mining import glicko
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
    validation_lock_duration: float = 30.0
    text_tasks_ratio: float = 0.8  # --task.synthetic.text_tasks_ratio
    duel_share: float = 0.0  # share of our tasks that are duels (configurable; no code default)
    duel_win_rate: float = 0.5  # when both sides delivered, how often the judge prefers ours (assumed)
    opponent_rating: float = 1500.0  # the duel opponent's rating (RD 350, as a fresh miner's)
    pull_failure_rate: float = 0.0  # rehearsal: pulls that fail on the network (the miner skips 300 s)
    submit_failure_rate: float = 0.0  # rehearsal: submits that never get feedback (result lost)


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
    VALIDATION_LOCKED = "validation_locked"  # within 30 s of the last validation: 0.0, nothing changes
    RESUBMITTED_TOO_QUICKLY = (
        "resubmitted_too_quickly"  # too soon after an accepted one: 0.0, nothing changes
    )


GUARD_OUTCOMES = (Outcome.WRONG_TASK, Outcome.VALIDATION_LOCKED, Outcome.RESUBMITTED_TOO_QUICKLY)
FAILURES = (Outcome.REJECTED, Outcome.EMPTY, Outcome.BAD_SIGNATURE, Outcome.VALIDATION_FAILED)


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    validator_uid: int
    assigned_at: float
    image: bool = False  # image-to-3D: `prompt` is the base64 image
    duel: bool = False  # the miner cannot tell; the rehearsal shows it afterwards


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
    rating: float = 1500.0  # the duel rating after this submit
    duel: str | None = None  # "won" | "lost" | "draw" when the task was a duel

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
    validation_locked_until: float = 0.0
    last_submit_time: float = 0.0  # of the last accepted result


class SimulatedValidator:
    """One validator's task and cooldown rules, driven by an injectable clock."""

    _ids = itertools.count(1)

    def __init__(
        self,
        uid: int,
        rules: ValidatorRules,
        clock: Clock,
        rating: float = 1500.0,
        rng: random.Random | None = None,
        image_prompt: str | None = None,
    ) -> None:
        self.uid = uid
        self.rules = rules
        self.clock = clock
        self.glicko = glicko.Glicko(rating=rating)  # this validator's duel rating of our miner
        self.rng = rng or random.Random(uid)
        self.image_prompt = image_prompt  # the base64 image its image tasks carry
        self.miner = MinerRecord()
        self._finished_at: float | None = None

    @property
    def rating(self) -> float:
        return self.glicko.rating

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
        r = self.rules
        image = self.image_prompt is not None and self.rng.random() >= r.text_tasks_ratio
        duel = self.rng.random() < r.duel_share
        task_prompt = self.image_prompt if image and self.image_prompt is not None else prompt
        m.assigned = Task(f"{self.uid}-{next(self._ids)}", task_prompt, self.uid, now, image, duel)
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
        now = self._now()
        if now < m.validation_locked_until:
            return self._feedback(Outcome.VALIDATION_LOCKED, 0.0)
        m.validation_locked_until = now + r.validation_lock_duration
        if score is None:
            return self._fail(Outcome.VALIDATION_FAILED, 0.0)
        if m.last_submit_time + r.task_cooldown - r.throttle_period > now:
            return self._feedback(Outcome.RESUBMITTED_TOO_QUICKLY, 0.0)
        if score < r.quality_threshold:
            return self._fail(Outcome.REJECTED, r.cooldown_penalty)
        fidelity = min(1.0, score)
        duel = self._duel(won_if_judged=True)
        self._reset_task(r.task_cooldown)
        m.observations.append(now)
        m.fidelity = m.fidelity * (1 - r.moving_average_alpha) + r.moving_average_alpha * fidelity
        m.last_submit_time = now
        return self._feedback(Outcome.ACCEPTED, fidelity, duel)

    def _duel(self, won_if_judged: bool) -> str | None:
        """Settle the assigned task's duel, if it is one. Our failure loses (the opponent is taken to
        deliver); when both delivered the judge decides, modelled by `duel_win_rate`."""
        task = self.miner.assigned
        if task is None or not task.duel:
            return None
        if won_if_judged:
            score = glicko.WIN if self.rng.random() < self.rules.duel_win_rate else glicko.LOSS
        else:
            score = glicko.LOSS
        opponent = glicko.Glicko(rating=self.rules.opponent_rating)
        self.glicko, _ = glicko.duel(self.glicko, opponent, score)
        return "won" if score == glicko.WIN else "lost"

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
        duel = self._duel(won_if_judged=False)  # every failure path is a lost duel
        self._reset_task(self.rules.task_cooldown + penalty)
        return self._feedback(outcome, 0.0, duel)

    def _feedback(self, outcome: Outcome, score: float, duel: str | None = None) -> SubmitResponse:
        window = self.accepted_in_window()
        return SubmitResponse(
            outcome=outcome,
            score=score,
            cooldown_until=self.miner.cooldown_until,
            violations=self.miner.violations,
            average_score=self.miner.fidelity,
            accepted_in_window=window,
            reward=window * self.rating,  # miner_data.calculate_reward: accepted in the window x rating
            rating=self.rating,
            duel=duel,
        )
