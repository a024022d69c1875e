"""MiningState: one picture of validators, recent scores and the ledger, fed by events from either
the rehearsal loop or the live log follower. The panes read it; it never touches widgets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from console.mining.events import (
    AveragesReported,
    FeedbackReceived,
    GenerationDone,
    MinerStatus,
    MiningEvent,
    NoValidators,
    PullFailed,
    PullRefused,
    Querying,
    SubmitFailed,
    TaskReceived,
    WorkerStarted,
)
from console.mining.ledger import Ledger, ResultRecord
from console.mining.rules import ValidatorRules, cooldown_until

RECENT_LIMIT = 200
MISSED_AFTER_S = 30.0
PENDING_MAX = 256  # tasks received and not answered: bounded, and dropped after PENDING_TTL_S
PENDING_TTL_S = 900.0
UNATTRIBUTED_LIMIT = 100
FAILED_SKIP_S = 300.0  # the miner skips a validator this long after a failed pull or submit
ZERO = "zero"  # live feedback 0.0: rejected (+600 s), empty, or a guard (cooldown unchanged)


@dataclass
class ValidatorView:
    uid: int
    rules: ValidatorRules = field(default_factory=ValidatorRules)
    name: str = ""
    cooldown_until: float = 0.0
    cooldown_started: float = 0.0
    estimated: bool = False  # cooldown computed by us from the rules, not reported by the validator
    penalised: bool = False
    busy_since: float | None = None  # a task pulled and not yet answered
    busy_prompt: str | None = None
    last_score: float | None = None
    last_outcome: str | None = None
    violations: int = 0
    tasks_done: int = 0
    skip_until: float = 0.0  # the miner's own 300 s skip after a failed pull or submit
    submit_failures: int = 0
    reported: AveragesReported | None = None  # this validator's own view (the Average-score line)

    busy_limit_s: float | None = None  # live logs: a pull with no answer stops counting as busy

    def status(self, now: float) -> str:
        if self.busy_since is not None and (
            self.busy_limit_s is None or now - self.busy_since < self.busy_limit_s
        ):
            return "busy"
        if now < self.skip_until and self.skip_until >= self.cooldown_until:
            return "skipped"
        if now < self.cooldown_until:
            return "penalised" if self.penalised else "cooldown"
        return "ready"

    def remaining(self, now: float) -> float:
        return max(0.0, max(self.cooldown_until, self.skip_until) - now)

    def fraction_left(self, now: float) -> float:
        span = self.cooldown_until - self.cooldown_started
        return 0.0 if span <= 0 else min(1.0, self.remaining(now) / span)


@dataclass
class MiningState:
    mode: str = "rehearsal"  # or "live"
    default_rules: ValidatorRules = field(default_factory=ValidatorRules)
    validators: dict[int, ValidatorView] = field(default_factory=dict)
    known: dict[int, tuple[ValidatorRules, str]] = field(default_factory=dict)  # rules by uid, from YAML
    hotkeys: dict[str, int] = field(default_factory=dict)  # validator hotkey -> uid, from YAML
    busy_limit_s: float | None = None  # see ValidatorView.busy_limit_s
    ledger: Ledger = field(default_factory=Ledger)
    recent: deque[ResultRecord] = field(default_factory=lambda: deque(maxlen=RECENT_LIMIT))
    endpoints: list[str] = field(default_factory=list)
    averages: AveragesReported | None = None
    miner: MinerStatus | None = None
    scorer_label: str = ""
    time_scale: float = 1.0
    last_event_t: float = 0.0
    no_validator_waits: int = 0
    generation_errors: int = 0
    pull_failures: int = 0
    events_seen: int = 0
    submit_failures: int = 0
    image_tasks: int = 0
    image_results: int = 0
    pending_expired: int = 0
    # lines the log does not tie to a validator with certainty: listed, never credited by guess
    unattributed: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=UNATTRIBUTED_LIMIT))
    failed_submits: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=UNATTRIBUTED_LIMIT))
    # averages lines that followed no feedback line (cannot be tied to a validator)
    unattributed_averages: int = 0
    _pending: dict[str, tuple[int | None, float]] = field(default_factory=dict)  # task key -> (uid, t)
    _gen_done: dict[str, GenerationDone] = field(default_factory=dict)
    _missing_since: dict[int, float | None] = field(default_factory=dict)

    # -- set-up -------------------------------------------------------------------------------
    def add_validator(self, uid: int, rules: ValidatorRules | None = None, name: str = "") -> ValidatorView:
        view = self.validators.get(uid)
        if view is None:
            known_rules, known_name = self.known.get(uid, (self.default_rules, f"validator {uid}"))
            view = ValidatorView(
                uid, rules or known_rules, name or known_name, busy_limit_s=self.busy_limit_s
            )
            self.validators[uid] = view
        return view

    # -- events -------------------------------------------------------------------------------
    def apply(self, ev: MiningEvent) -> None:
        self.events_seen += 1
        self.last_event_t = max(self.last_event_t, ev.t)
        self._expire_pending(ev.t)
        handler = getattr(self, f"_on_{type(ev).__name__}", None)
        if handler is not None:
            handler(ev)

    def _on_WorkerStarted(self, ev: WorkerStarted) -> None:
        if ev.endpoint not in self.endpoints:
            self.endpoints.append(ev.endpoint)

    def _on_Querying(self, ev: Querying) -> None:
        if ev.uid is None:
            return
        v = self.add_validator(ev.uid)
        # the miner marks it busy locally for 300 s while it pulls; the pull's answer replaces it
        v.busy_since = ev.t
        v.busy_prompt = None

    def _on_NoValidators(self, ev: NoValidators) -> None:
        self.no_validator_waits += 1

    def _unattributed(self, t: float, kind: str, detail: str) -> None:
        self.unattributed.append({"t": t, "kind": kind, "detail": detail})

    def _attributed_late(self, t: float, kind: str) -> None:
        for entry in list(self.unattributed):
            if entry["t"] == t and entry["kind"] == kind:
                self.unattributed.remove(entry)
                return

    def _on_PullRefused(self, ev: PullRefused) -> None:
        if ev.uid is None:
            left = "?" if ev.cooldown_until is None else f"{ev.cooldown_until - ev.t:.0f} s"
            self._unattributed(ev.t, "cooldown", f"on cooldown for {left}, violations {ev.violations}")
            return
        v = self.add_validator(ev.uid)
        if ev.late:
            self._attributed_late(ev.t, "cooldown")
            if ev.t < v.cooldown_started:
                return  # a newer answer already set this validator's cooldown
        if v.busy_since is not None and v.busy_since <= ev.t:
            v.busy_since = None
        if ev.cooldown_until is not None:
            v.cooldown_started = ev.t
            v.cooldown_until = ev.cooldown_until
            v.estimated = False
        if ev.violations is not None:
            v.violations = ev.violations

    def _skip(self, uid: int, t: float) -> None:
        v = self.add_validator(uid)
        v.skip_until = max(v.skip_until, t + FAILED_SKIP_S)
        if v.busy_since is not None and v.busy_since <= t:
            v.busy_since, v.busy_prompt = None, None

    def _on_PullFailed(self, ev: PullFailed) -> None:
        if ev.late:
            self._attributed_late(ev.t, "pull_failed")
        else:
            self.pull_failures += 1
        if ev.uid is None:
            self._unattributed(ev.t, "pull_failed", f"[{ev.validator}] {ev.reason}")
            return
        self._skip(ev.uid, ev.t)

    def _on_SubmitFailed(self, ev: SubmitFailed) -> None:
        self.submit_failures += 1
        key = ev.log_id or ev.prompt
        if key is not None:
            self._pending.pop(key, None)
        self.failed_submits.append(
            {"t": ev.t, "uid": ev.uid, "hotkey": ev.validator, "reason": ev.reason, "prompt": ev.prompt}
        )
        if ev.uid is None:
            self._unattributed(ev.t, "submit_failed", f"[{ev.validator}] {ev.reason}")
            return
        self._skip(ev.uid, ev.t)
        v = self.validators[ev.uid]
        v.submit_failures += 1
        v.last_outcome, v.last_score = "submit_failed", None
        record = ResultRecord(
            t=ev.t,
            uid=ev.uid,
            prompt=ev.prompt or "",
            endpoint=None,
            preset=None,
            gen_time_s=None,
            score=None,
            accepted=False,
            outcome="submit_failed",
            image=bool(ev.log_id and ev.log_id.startswith("image:")),
        )
        self.ledger.add(record)
        self.recent.append(record)

    def _expire_pending(self, now: float) -> None:
        """Tasks never answered (a lost line, a worker that died) leave after PENDING_TTL_S; the
        dict is in arrival order, so the oldest go first and the loop stops at the first fresh one."""
        while self._pending:
            key, (_, t) = next(iter(self._pending.items()))
            if now - t <= PENDING_TTL_S and len(self._pending) <= PENDING_MAX:
                break
            del self._pending[key]
            self._gen_done.pop(key, None)
            self.pending_expired += 1
        while len(self._gen_done) > PENDING_MAX:
            del self._gen_done[next(iter(self._gen_done))]

    def _on_TaskReceived(self, ev: TaskReceived) -> None:
        key = ev.key
        if ev.late:  # an earlier task line now tied to its validator
            self._attributed_late(ev.t, "task")
            if key in self._pending:
                self._pending[key] = (ev.uid, self._pending[key][1])
            return
        if ev.image:
            self.image_tasks += 1
        self._pending[key] = (ev.uid, ev.t)
        if ev.uid is None:
            self._unattributed(ev.t, "task", ev.prompt[:100])
            return
        v = self.add_validator(ev.uid)
        v.busy_since = ev.t
        v.busy_prompt = ev.prompt

    def _on_GenerationDone(self, ev: GenerationDone) -> None:
        if not ev.ok:
            self.generation_errors += 1
        if ev.key is not None:
            self._gen_done[ev.key] = ev

    def _on_FeedbackReceived(self, ev: FeedbackReceived) -> None:
        v = self.add_validator(ev.uid)
        key = ev.key
        uid_t = self._pending.pop(key, None) if key is not None else None
        if uid_t is not None and uid_t[0] is None:
            self._attributed_late(uid_t[1], "task")  # the feedback names the validator it came from
        assigned_at = uid_t[1] if uid_t else v.busy_since
        gen = self._gen_done.pop(key, None) if key is not None else None
        outcome = ev.outcome or _outcome_from_score(ev.score, v.rules)
        if ev.outcome is None and gen is not None and not gen.ok and not ev.score:
            outcome = "empty"  # the miner submits an empty result when generation fails: no penalty
        if ev.image:
            self.image_results += 1
        accepted = outcome == "accepted"
        if outcome in GUARDS:
            pass  # the validation lock, a resubmit too soon or a wrong task: the cooldown is unchanged
        elif ev.cooldown_until is not None:
            v.cooldown_started, v.cooldown_until, v.estimated = ev.t, ev.cooldown_until, False
        else:
            # live: the log does not carry cooldown_until. A 0.0 may be a rejection (+600 s), an empty
            # result, or a guard; the estimate is the plain cooldown, shown as a lower bound.
            penalty = v.rules.cooldown_penalty if outcome == "rejected" else 0.0
            until = cooldown_until(
                ev.t, assigned_at, v.rules.task_cooldown + penalty, v.rules.throttle_period
            )
            v.cooldown_started, v.cooldown_until, v.estimated = ev.t, until, True
        v.penalised = outcome in ("rejected", "bad_signature")
        v.busy_since, v.busy_prompt = None, None
        v.tasks_done += 1
        v.last_outcome = outcome
        shown = ev.measured_score if ev.measured_score is not None else ev.score
        if outcome in GUARDS:
            shown = None
        if ev.gate_only:  # the stand-in knows only the gate: a fail is a real 0, a pass has no score
            shown = 0.0 if ev.gate_passed is False else None
        if outcome in ("empty", "validation_failed"):
            shown = None  # no quality was judged
        v.last_score = shown
        if ev.violations is not None:
            v.violations = ev.violations
        gen_time = ev.gen_time_s
        if gen_time is None and gen is not None:
            gen_time = gen.time_s
        if gen_time is None and assigned_at is not None:
            gen_time = ev.t - assigned_at  # live logs: task received -> feedback
        record = ResultRecord(
            t=ev.t,
            uid=ev.uid,
            prompt=ev.prompt or "",
            endpoint=ev.endpoint or (gen.endpoint if gen else None),
            preset=ev.preset or (gen.preset if gen else None),
            gen_time_s=gen_time,
            score=shown,
            accepted=accepted,
            outcome=outcome,
            gate_only=ev.gate_only,
            image=ev.image,
            parts=ev.parts,
            duel=ev.duel,
        )
        self.ledger.add(record)
        self.recent.append(record)

    def _on_AveragesReported(self, ev: AveragesReported) -> None:
        self.averages = ev  # the latest line, whichever validator wrote it
        if ev.uid is None:
            self.unattributed_averages += 1
            return
        self.add_validator(ev.uid).reported = ev

    def _on_MinerStatus(self, ev: MinerStatus) -> None:
        self.miner = ev

    # -- capacity -----------------------------------------------------------------------------
    def busy_count(self, now: float) -> int:
        return sum(1 for v in self.validators.values() if v.status(now) == "busy")

    def observe_capacity(self, now: float, endpoints_total: int | None = None) -> None:
        """Count a missed window for each validator that sits free while every endpoint is busy, once
        that has lasted `MISSED_AFTER_S` (the throttle period: a wait the validator would not forgive)."""
        total = endpoints_total if endpoints_total is not None else len(self.endpoints)
        all_busy = total > 0 and self.busy_count(now) >= total
        for uid, v in self.validators.items():
            if all_busy and v.status(now) == "ready":
                since = self._missing_since.setdefault(uid, now)
                if since is not None and now - since >= MISSED_AFTER_S:
                    self.ledger.note_missed(now, uid)
                    self._missing_since[uid] = None  # counted; wait for the interval to end
            else:
                self._missing_since.pop(uid, None)

    # -- output -------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        ledger = self.ledger
        return {
            "mode": self.mode,
            "now": now,
            "time_scale": self.time_scale,
            "scorer": self.scorer_label,
            "endpoints": list(self.endpoints),
            "validators": [
                {
                    "uid": v.uid,
                    "name": v.name,
                    "state": v.status(now),
                    "cooldown_until": v.cooldown_until or None,
                    "cooldown_left_s": round(v.remaining(now), 1),
                    "cooldown_estimated": v.estimated,
                    "task_cooldown_s": v.rules.task_cooldown,
                    "last_score": v.last_score,
                    "last_outcome": v.last_outcome,
                    "violations": v.violations,
                    "tasks_done": v.tasks_done,
                    "skip_until": v.skip_until or None,
                    "submit_failures": v.submit_failures,
                    "reported": _reported(v.reported),
                }
                for v in sorted(self.validators.values(), key=lambda x: x.uid)
            ],
            "recent_scores": [asdict(r) for r in list(self.recent)[-50:]],
            "ledger": {
                "window_h": ledger.window_s / 3600,
                "accepted": ledger.accepted(now),
                "results": len(ledger.window(now)),
                "mean_score": ledger.mean_score(now),
                "acceptance_rate": ledger.acceptance_rate(now),
                "missed_windows": ledger.missed_windows(now),
                "gate_only": ledger.gate_only(now),
            },
            "reported": _reported(self.averages),  # the latest line; per validator under "validators"
            "unattributed": list(self.unattributed),
            "failed_submits": list(self.failed_submits),
            "image_tasks": {"received": self.image_tasks, "answered": self.image_results},
            "miner": None
            if self.miner is None
            else {"uid": self.miner.uid, "incentive": self.miner.incentive},
            "counters": {
                "no_validator_waits": self.no_validator_waits,
                "generation_errors": self.generation_errors,
                "pull_failures": self.pull_failures,
                "submit_failures": self.submit_failures,
                "unattributed_averages": self.unattributed_averages,
                "pending_expired": self.pending_expired,
                "events": self.events_seen,
            },
        }


def _reported(a: AveragesReported | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "uid": a.uid,
        "t": a.t,
        "average_score": a.average,
        "duel_rating": a.rating,
        "accepted": a.accepted,
        "window_h": a.window_h,
        "reward": a.reward,
    }


GUARDS = ("validation_locked", "resubmitted_too_quickly", "wrong_task")  # 0.0, cooldown unchanged


def _outcome_from_score(score: float | None, rules: ValidatorRules) -> str:
    """Live feedback: the validator reports 0.0 for every result it did not accept (validator.py
    `_add_feedback_and_strip` defaults the task score to 0.0), so a 0.0 alone does not say why."""
    if score is None:
        return "validation_failed"
    return "accepted" if score >= rules.quality_threshold else ZERO
