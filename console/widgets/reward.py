"""The one-line reward summary.

What each part means and where it comes from (docs/mining.md has the long form):
- `accepted (4h)`, `acceptance`, `missed windows`: our own ledger of results in the 4-hour window.
- `validators' reward`: what validators pay on, as their code computes it (three-gen-subnet
  miner_data.calculate_reward): accepted results in their 4-hour window x our duel rating, each
  validator's own numbers (live: its Average-score line; rehearsal: the simulated validator).
  Weights then go by rank among miners; the fidelity score only decides acceptance.
- `projection`: per preset, accepted results per 4 h with the cooldown rules applied, times the
  rating (1500 when no validator has reported one).
- the capacity note: one more endpoint on the same GPU buys latency, not results (measured on an
  H200: 4 `gen404 serve` processes 1,065 gens/h vs one endpoint serving the same 4 requests queued
  1,068 gens/h); another GPU adds capacity.
"""

from __future__ import annotations

from textual.widgets import Static

from console.advisor import miner_rating, reward_per_4h
from console.mining.ledger import Projection
from console.mining.state import MiningState

SAME_GPU_NOTE = (
    "+1 endpoint on the same GPU: latency only (H200: 4 processes 1,065 gens/h = 1 endpoint 1,068); "
    "another GPU: +capacity"
)


def reported_rewards(state: MiningState) -> tuple[float, int]:
    """(sum of the validators' reported rewards, validators reporting)."""
    views = [v.reported for v in state.validators.values() if v.reported is not None]
    return sum(r.reward for r in views), len(views)


def _projection_text(name: str, p: Projection, rating: float) -> str:
    return (
        f"{name}: {p.accepted_4h:.0f} accepted/4h × rating {rating:.0f} = {reward_per_4h(p, rating):,.0f}"
        f" ({p.limited_by}-bound)"
    )


def capacity_note(projections: dict[str, Projection]) -> str:
    if projections and all(p.limited_by == "validators" for p in projections.values()):
        return "validators' cooldowns bound the results: more endpoints buy nothing"
    return SAME_GPU_NOTE


def reward_line(state: MiningState, now: float) -> str:
    led = state.ledger
    mean = led.mean_score(now)
    rate = led.acceptance_rate(now)
    parts = [
        f"accepted (4h): {led.accepted(now)}",
        "mean score: "
        + ("gate-only" if mean is None and led.gate_only(now) else "-" if mean is None else f"{mean:.2f}"),
        "acceptance: " + ("-" if rate is None else f"{rate:.0%}"),
        f"missed windows: {led.missed_windows(now)}",
    ]
    total, reporting = reported_rewards(state)
    rating, rating_source = miner_rating(state)
    if reporting:
        reported = f", mean rating {rating:.0f}" if rating_source == "validators" else ""
        parts.append(f"validators' reward: {total:,.0f} from {reporting} (accepted × rating{reported})")
    if state.submit_failures:
        parts.append(f"lost submits: {state.submit_failures}")
    endpoints = max(1, len(state.endpoints))
    rules = [v.rules for v in state.validators.values()]
    if rules:
        projections = led.projections(now, rules, endpoints)
        if projections:
            parts.append(
                "projection "
                + "; ".join(_projection_text(k, p, rating) for k, p in sorted(projections.items()))
            )
            parts.append(capacity_note(projections))
    return " · ".join(parts)


class RewardSummary(Static):
    def show(self, state: MiningState, now: float) -> None:
        self.text = reward_line(state, now)
        self.update(self.text)

    text: str = ""
