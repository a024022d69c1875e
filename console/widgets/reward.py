"""The one-line reward summary: accepted in the 4-hour window, mean score, acceptance, missed
windows, and the seed guide's projection (score x generations per 4 h) per preset."""

from __future__ import annotations

from textual.widgets import Static

from console.mining.ledger import Projection
from console.mining.state import MiningState


def _projection_text(name: str, p: Projection) -> str:
    if p.guide_reward is None:
        return f"{name}: {p.generations_4h:.0f} gens/4h × score ? (gate-only)"
    return f"{name}: {p.score:.2f} × {p.generations_4h:.0f} = {p.guide_reward:.1f}"


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
    if state.averages is not None:
        a = state.averages
        rating = "" if a.rating is None else f" rating {a.rating:.0f},"
        parts.append(f"miner: avg {a.average:.2f},{rating} {a.accepted}/{a.window_h}h, reward {a.reward:.0f}")
    endpoints = max(1, len(state.endpoints))
    rules = [v.rules for v in state.validators.values()]
    if rules:
        projections = led.projections(now, rules, endpoints)
        if projections:
            parts.append(
                "projection " + "; ".join(_projection_text(k, p) for k, p in sorted(projections.items()))
            )
    return " · ".join(parts)


class RewardSummary(Static):
    def show(self, state: MiningState, now: float) -> None:
        self.text = reward_line(state, now)
        self.update(self.text)

    text: str = ""
