"""The reward advisor: the seed guide's speed x quality matrix, computed live, and its tune loop as
rules with their reasons (no Textual, no torch).

Per preset, from what has been measured:
- generation time: the endpoints' GET /stats (mean of recent results) for the presets they run
  now, else the mining ledger's results for that preset, else a `gen404 bench --json` file;
- score and acceptance: the ledger's results in the 4-hour window (live log or rehearsal);
  acceptance is "assumed" 100 % when nothing was judged yet;
- the validators' cooldown windows: tasks they allow per 4 hours at that time (ledger.project,
  which applies each validator's cooldown, throttle period and rejection penalty);
- projected accepted results and reward per 4 hours; the preset with the most reward among those
  whose acceptance was measured is marked (an unjudged one's assumed 100 % would flatter it).

Reward is what validators compute (accepted results in 4 h x duel rating); `reward_per_4h` is the
one place that says so, so a change of formula is one line. Tune rules (seed guide, Phase 3), each
firing for the selected endpoint with its reason:
- generation time > the validators' throttle period (30 s): fewer iters (scaled to the target
  time), or a smaller ref_size;
- mean score < the validators' quality threshold (0.6): more iters (+20 %, the seed's 250 -> 300),
  or a higher guidance_scale (+10) when more iters would break the time window.
A suggestion is a preset reference ("text_mv_fast+iters=300") that PUT /preset applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from console.endpoint_client import ANSWERING
from console.mining.glicko import Glicko
from console.mining.ledger import Projection, ResultRecord, project
from console.mining.rules import ValidatorRules
from console.mining.state import MiningState
from console.supervisor.model import EndpointView
from engine.presets import Preset, PresetError, format_ref, load_preset, split_ref

TARGET_S = 25.0  # the seed guide's target generation time, inside the 30 s window with margin
REF_SIZES = (64, 96, 128, 192, 256, 384, 512)  # the steps a smaller-ref_size suggestion takes
GUIDANCE_STEP = 10.0  # the seed's 50 -> 60
ITERS_GROWTH = 1.2  # the seed's 250 -> 300
UNLIMITED_LANES = 10**9  # project() with this many endpoints gives the validators' bound alone
LIVE_STATES = ANSWERING


def reward_per_4h(p: Projection, rating: float) -> float:
    """What validators pay on (three-gen-subnet miner_data.calculate_reward): accepted results in
    their 4-hour window x the miner's duel rating. The one place to change if the formula moves."""
    return p.accepted_4h * rating


@dataclass(frozen=True)
class PresetOutlook:
    """One row of the matrix."""

    preset: str
    gen_time_s: float
    time_source: str  # "/stats" | "ledger" | "bench"
    score: float | None
    acceptance: float
    acceptance_source: str  # "ledger" | "assumed"
    max_tasks_4h: float  # what the validators' cooldown windows allow at this generation time
    generations_4h: float
    accepted_4h: float
    reward_4h: float
    limited_by: str  # "validators" | "endpoints"
    best: bool = False


@dataclass(frozen=True)
class Suggestion:
    endpoint: str  # EndpointView.key
    current: str  # the preset (reference) it runs now
    overrides: dict[str, int | float]
    ref: str  # what PUT /preset gets: "text_mv_fast+iters=300"
    rule: str  # "time > 30 s" | "score < 0.6"
    reason: str


@dataclass(frozen=True)
class Advice:
    rows: list[PresetOutlook]
    rating: float
    rating_source: str  # "validators" | "starting rating"
    lanes: int  # endpoints counted as generation lanes
    throttle_s: float
    threshold: float
    suggestions: dict[str, list[Suggestion]] = field(default_factory=dict)  # by endpoint key

    @property
    def best(self) -> PresetOutlook | None:
        return next((r for r in self.rows if r.best), None)


# ------------------------------------------------------------------ inputs


def read_bench_json(path: Path | None) -> dict[str, float]:
    """preset -> median seconds from `gen404 bench --json FILE` (optimised runs without errors)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for r in data.get("results") or [] if isinstance(data, dict) else []:
        if not isinstance(r, dict) or r.get("error") or r.get("variant", "optimised") != "optimised":
            continue
        median = r.get("median_s")
        name = r.get("label") or r.get("preset")
        if isinstance(median, (int, float)) and median > 0 and isinstance(name, str):
            out[name] = float(median)
    return out


def miner_rating(state: MiningState) -> tuple[float, str]:
    """The duel rating to project with: the validators' reported ratings averaged, else a new
    miner's starting rating; and which of the two it is."""
    ratings = [
        v.reported.rating
        for v in state.validators.values()
        if v.reported is not None and v.reported.rating is not None
    ]
    if ratings:
        return sum(ratings) / len(ratings), "validators"
    return Glicko().rating, "starting rating"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _quality(recs: Sequence[ResultRecord]) -> tuple[float | None, float | None]:
    """(mean known score, acceptance among judged results) of some ledger records."""
    scores = [r.score for r in recs if r.score is not None]
    judged = [r for r in recs if r.outcome != "validation_failed"]
    acceptance = sum(r.accepted for r in judged) / len(judged) if judged else None
    return _mean(scores), acceptance


# ------------------------------------------------------------------ the matrix


def matrix(
    state: MiningState,
    now: float,
    views: Sequence[EndpointView],
    bench: Mapping[str, float] | None = None,
    preset_values: Callable[[str], Preset | None] | None = None,
) -> Advice:
    """The advice from the current state: matrix rows (best marked) and suggestions per endpoint."""
    rules = [v.rules for v in state.validators.values()] or [ValidatorRules()]
    throttle = min(r.throttle_period for r in rules)
    threshold = max(r.quality_threshold for r in rules)
    rating, rating_source = miner_rating(state)
    live = [v for v in views if v.status in LIVE_STATES]
    lanes = max(1, len(live))
    ledger = state.ledger.per_preset(now)

    times: dict[str, tuple[float, str]] = {}
    for name, seconds in (bench or {}).items():
        times[name] = (seconds, "bench")
    for name, recs in ledger.items():
        measured = [r.gen_time_s for r in recs if r.gen_time_s is not None]
        if measured and name != "?":
            times[name] = (sum(measured) / len(measured), "ledger")
    by_preset: dict[str, list[float]] = {}
    for v in live:
        if v.mean_s is not None:
            by_preset.setdefault(v.preset, []).append(v.mean_s)
    for name, means in by_preset.items():
        times[name] = (sum(means) / len(means), "/stats")

    running = {v.preset for v in live}
    rows: list[PresetOutlook] = []
    for name, (seconds, source) in sorted(times.items()):
        recs = ledger.get(name) or (
            ledger.get("?", []) if running == {name} else []
        )  # live logs name no preset
        score, acceptance = _quality(recs)
        proj = project(
            seconds, rules, lanes, acceptance=1.0 if acceptance is None else acceptance, score=score
        )
        cap = project(seconds, rules, UNLIMITED_LANES, acceptance=1.0).generations_4h
        rows.append(
            PresetOutlook(
                preset=name,
                gen_time_s=seconds,
                time_source=source,
                score=score,
                acceptance=proj.acceptance,
                acceptance_source="assumed" if acceptance is None else "ledger",
                max_tasks_4h=cap,
                generations_4h=proj.generations_4h,
                accepted_4h=proj.accepted_4h,
                reward_4h=reward_per_4h(proj, rating),
                limited_by=proj.limited_by,
            )
        )
    # best among presets whose acceptance was measured: an assumed 100 % would flatter any
    # preset never judged (a 150 s bench time with "100 %" outranks a measured 75 %)
    judged = [r for r in rows if r.acceptance_source == "ledger"] or rows
    if judged:
        top = max(judged, key=lambda r: (r.reward_4h, -r.gen_time_s))
        rows = [replace(r, best=r is top) for r in rows]
    advice = Advice(rows, rating, rating_source, lanes, throttle, threshold)
    scores = {r.preset: r.score for r in rows}
    values = preset_values or _load_values
    for v in live:
        known = times.get(v.preset)
        preset = values(v.preset)
        if preset is not None:
            advice.suggestions[v.key] = tune(
                v.key,
                v.preset,
                preset,
                v.mean_s if v.mean_s is not None else known[0] if known else None,
                scores.get(v.preset),
                throttle,
                threshold,
            )
    return advice


def _load_values(ref: str) -> Preset | None:
    try:
        return load_preset(ref)  # this machine's preset files (a remote box's may differ)
    except PresetError:
        return None


# ------------------------------------------------------------------ the tune rules


def tune(
    endpoint: str,
    current: str,
    preset: Preset,
    gen_time_s: float | None,
    score: float | None,
    throttle_s: float,
    threshold: float,
) -> list[Suggestion]:
    """The seed guide's tune loop for one endpoint, first suggestion first; [] when no rule fires."""
    base, tuned = split_ref(current)
    out: list[Suggestion] = []

    def suggest(rule: str, reason: str, **changes: int | float) -> None:
        overrides = {**tuned, **changes}
        out.append(Suggestion(endpoint, current, overrides, format_ref(base, overrides), rule, reason))

    slow = gen_time_s is not None and gen_time_s > throttle_s
    if slow and gen_time_s is not None:
        rule = f"time > {throttle_s:g} s"
        why = f"{gen_time_s:.1f} s is over the validators' {throttle_s:g} s window"
        iters = max(10, int(preset.iters * TARGET_S / gen_time_s) // 10 * 10)
        if iters < preset.iters:
            suggest(rule, f"{why}: fewer iters ({preset.iters} → {iters}, ~{TARGET_S:g} s)", iters=iters)
        smaller = [s for s in REF_SIZES if s < preset.ref_size]
        if smaller:
            suggest(
                rule, f"{why}: smaller ref_size ({preset.ref_size} → {smaller[-1]})", ref_size=smaller[-1]
            )
    if score is not None and score < threshold:
        rule = f"score < {threshold:g}"
        why = f"mean score {score:.2f} is under the validators' {threshold:g} threshold"
        if not slow:
            iters = int(preset.iters * ITERS_GROWTH + 9) // 10 * 10
            suggest(rule, f"{why}: more iters ({preset.iters} → {iters})", iters=iters)
        scale = preset.guidance_scale + GUIDANCE_STEP
        suggest(rule, f"{why}: more guidance ({preset.guidance_scale:g} → {scale:g})", guidance_scale=scale)
    return out


def explain(advice: Advice) -> list[str]:
    """The rules as sentences, with the numbers they use (for the advisor screen)."""
    return [
        f"reward/4h = accepted results in 4 h × duel rating ({advice.rating:.0f}, {advice.rating_source})",
        f"time > {advice.throttle_s:g} s (validators' throttle period) → fewer iters or smaller ref_size",
        f"score < {advice.threshold:g} (validators' quality threshold) → more iters or guidance",
        f"projection assumes every one of {advice.lanes} live endpoint(s) runs the row's preset",
        "★ best: most reward among presets with measured acceptance (an unjudged preset is assumed 100 %)",
    ]


def as_dict(advice: Advice) -> dict[str, Any]:
    """JSON-ready (for --once --json style consumers and tests)."""
    return {
        "rating": advice.rating,
        "rating_source": advice.rating_source,
        "lanes": advice.lanes,
        "rows": [asdict(r) for r in advice.rows],
        "suggestions": {k: [asdict(s) for s in v] for k, v in advice.suggestions.items()},
    }
