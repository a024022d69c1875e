"""Reward ledger: results in the validators' 4-hour window, and a projection per preset.

Validators pay on accepted results in the last 4 hours times the miner's duel rating
(three-gen-subnet miner_data.calculate_reward), then set weights by rank; the fidelity score
only decides acceptance. `project()` gives generations and accepted results per 4 hours from a
generation time and an acceptance rate against a validator set, with the cooldown rules applied
(a validator's cycle is its cooldown plus whatever the generation overran the throttle period
by, plus the 600 s penalty for each rejection). `guide_reward` keeps the seed guide's
score x generations for comparison only: it is not what validators compute.

`endpoints` are independent generation lanes: several endpoints on one GPU share its
throughput (measured on an H200: 4 serve processes 1,065 gens/h, one endpoint with the same 4
requests queued 1,068), so count GPUs, not processes, when projecting capacity.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from console.mining.rules import FOUR_HOURS, ValidatorRules


@dataclass(frozen=True)
class ResultRecord:
    t: float
    uid: int
    prompt: str
    endpoint: str | None
    preset: str | None
    gen_time_s: float | None
    score: float | None  # the quality score we know (None: gate-only or validation failed)
    accepted: bool
    outcome: str
    gate_only: bool = False
    image: bool = False  # an image-to-3D task (its prompt is shown as its log id)
    parts: dict[str, float] | None = None  # the validation service's iqa, alignment_score, ssim, lpips
    duel: str | None = None  # rehearsal: "won" | "lost" | "draw" for a duel task


@dataclass(frozen=True)
class MissedWindow:
    t: float
    uid: int


@dataclass(frozen=True)
class Projection:
    gen_time_s: float
    score: float | None
    acceptance: float
    generations_4h: float
    accepted_4h: float
    limited_by: str  # "validators" or "endpoints"

    @property
    def guide_reward(self) -> float | None:
        """The seed guide's number: score x generations per 4 hours."""
        return None if self.score is None else self.score * self.generations_4h


def project(
    gen_time_s: float,
    validators: Iterable[ValidatorRules],
    endpoints: int,
    acceptance: float = 1.0,
    score: float | None = None,
    window_s: float = FOUR_HOURS,
) -> Projection:
    """Generations and accepted results per window for one preset's measured time and quality."""
    g = max(gen_time_s, 1e-6)
    rejection = 1.0 - min(max(acceptance, 0.0), 1.0)
    by_validators = sum(
        window_s / (r.task_cooldown + max(0.0, g - r.throttle_period) + rejection * r.cooldown_penalty)
        for r in validators
    )
    by_endpoints = endpoints * window_s / g
    gens = min(by_validators, by_endpoints)
    limited = "validators" if by_validators <= by_endpoints else "endpoints"
    return Projection(g, score, 1.0 - rejection, gens, gens * (1.0 - rejection), limited)


@dataclass
class Ledger:
    window_s: float = FOUR_HOURS
    records: deque[ResultRecord] = field(default_factory=deque)
    missed: deque[MissedWindow] = field(default_factory=deque)

    def add(self, record: ResultRecord) -> None:
        self.records.append(record)

    def note_missed(self, t: float, uid: int) -> None:
        self.missed.append(MissedWindow(t, uid))

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self.records and self.records[0].t < horizon:
            self.records.popleft()
        while self.missed and self.missed[0].t < horizon:
            self.missed.popleft()

    def window(self, now: float) -> list[ResultRecord]:
        self._expire(now)
        return list(self.records)

    def accepted(self, now: float) -> int:
        return sum(1 for r in self.window(now) if r.accepted)

    def mean_score(self, now: float) -> float | None:
        """Mean of known scores; None when none is known or some result is gate-only (unscored)."""
        window = self.window(now)
        if any(r.gate_only and r.score is None for r in window):
            return None
        scores = [r.score for r in window if r.score is not None]
        return sum(scores) / len(scores) if scores else None

    def acceptance_rate(self, now: float) -> float | None:
        done = [r for r in self.window(now) if r.outcome != "validation_failed"]
        return sum(r.accepted for r in done) / len(done) if done else None

    def gate_only(self, now: float) -> bool:
        """True when some result in the window has no quality score (a gate-only stand-in scored it)."""
        return any(r.gate_only for r in self.window(now))

    def missed_windows(self, now: float) -> int:
        self._expire(now)
        return len(self.missed)

    def per_preset(self, now: float) -> dict[str, list[ResultRecord]]:
        out: dict[str, list[ResultRecord]] = {}
        for r in self.window(now):
            out.setdefault(r.preset or "?", []).append(r)
        return out

    def projections(
        self, now: float, validators: list[ValidatorRules], endpoints: int
    ) -> dict[str, Projection]:
        """Per preset, from the measured generation times, scores and acceptance in the window."""
        out: dict[str, Projection] = {}
        for preset, recs in self.per_preset(now).items():
            # image tasks are refused by the text presets before any generation: their
            # milliseconds measure no preset (they still count in the window's totals)
            recs = [r for r in recs if not r.image]
            times = [r.gen_time_s for r in recs if r.gen_time_s is not None]
            if not times:
                continue
            scores = [r.score for r in recs if r.score is not None]
            if any(r.gate_only and r.score is None and r.accepted for r in recs):
                scores = []  # quality unknown for the results that passed the gate: no score to project
            judged = [r for r in recs if r.outcome != "validation_failed"]
            acceptance = sum(r.accepted for r in judged) / len(judged) if judged else 1.0
            out[preset] = project(
                sum(times) / len(times),
                validators,
                endpoints,
                acceptance=acceptance,
                score=sum(scores) / len(scores) if scores else None,
            )
        return out
