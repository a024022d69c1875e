"""Alerts: the conditions a miner must act on, computed from the current state (no Textual).

Every alert names its source (a GPU, here or on another box; an endpoint, the scores, the
validators' windows) and is recomputed from scratch each refresh, so it clears by itself once
the condition stops. The App
shows them in a one-line strip (console/widgets/alerts.py); `gen404-console --once --json` lists
them under "alerts".

Thresholds and where they come from:
- GPU temperature >= 83 C (the seed guide's "should be < 83 C" under load), or a clocks-event
  reason that means the GPU slows itself down (thermal, hardware slowdown, power brake).
- VRAM above 95 % of the card: the next generation may not fit.
- an endpoint errored (the supervisor gave up after repeated quick crashes) or crash-looping
  (restarted after two or more quick crashes in a row).
- a generation slower than the validators' 30 s throttle window (404-reference section 4:
  beyond it the cooldown grows by the excess).
- a streak of scores below the 0.6 acceptance threshold (each costs a 600 s penalty).
- missed windows: a validator whose window ran out while it was free (our ledger).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from console.gpu import GpuSnapshot

HOT_C = 83.0
BAD_CLOCK_REASONS = ("hw-slowdown", "hw-thermal", "sw-thermal", "hw-power-brake")
VRAM_FULL_PERCENT = 95.0
CRASH_LOOP_CRASHES = 2  # quick crashes in a row that make a restarting endpoint "crash-looping"
THROTTLE_WINDOW_S = 30.0  # validators' throttle_period (404-reference section 4)
QUALITY_THRESHOLD = 0.6  # validators' quality_threshold
LOW_SCORE_STREAK = 3  # this many scored results in a row below the threshold


@dataclass(frozen=True)
class Alert:
    source: str  # what it is about: "GPU0", "gen-10006", "scores", "validators"
    kind: str  # stable id for scripts: thermal, throttle, vram, errored, crash_loop, slow, low_scores, missed
    text: str  # one short human sentence, without the source
    severity: str = "warning"  # "warning" | "error"

    def line(self) -> str:
        return f"{self.source}: {self.text}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class EndpointLike(Protocol):
    """What the alerts read of an endpoint (EndpointView has it; --once builds the same)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def last_s(self) -> float | None: ...
    @property
    def quick_crashes(self) -> int: ...


@dataclass(frozen=True)
class EndpointFacts:
    """An EndpointLike from plain values (`--once` reads /health and /stats, no supervisor)."""

    name: str
    status: str
    last_s: float | None = None
    quick_crashes: int = 0


class ScoredLike(Protocol):
    @property
    def score(self) -> float | None: ...
    @property
    def uid(self) -> int: ...


def gpu_alerts(snapshot: GpuSnapshot | None, box: str | None = None) -> list[Alert]:
    """This machine's GPUs ("GPU0"), or another box's ("10.0.0.5 GPU0", from its GET /gpu)."""
    if snapshot is None:
        return []
    out: list[Alert] = []
    for g in snapshot.gpus:
        src = f"GPU{g.index}" if box is None else f"{box} GPU{g.index}"
        if g.temp is not None and g.temp >= HOT_C:
            out.append(Alert(src, "thermal", f"{g.temp:.0f} °C (>= {HOT_C:.0f} °C)", "error"))
        bad = [r for r in (g.clock_events or []) if r in BAD_CLOCK_REASONS]
        if bad:
            out.append(Alert(src, "throttle", "throttling: " + ", ".join(bad), "error"))
        mem = g.mem_percent
        if mem is not None and mem > VRAM_FULL_PERCENT:
            out.append(Alert(src, "vram", f"VRAM {mem:.0f} % full (> {VRAM_FULL_PERCENT:.0f} %)"))
    return out


def endpoint_alerts(endpoints: Iterable[EndpointLike]) -> list[Alert]:
    out: list[Alert] = []
    for e in endpoints:
        if e.status in ("errored", "error"):
            out.append(Alert(e.name, "errored", "errored: see its log", "error"))
        elif e.quick_crashes >= CRASH_LOOP_CRASHES and e.status not in ("stopped", "stopping"):
            out.append(
                Alert(e.name, "crash_loop", f"crash-looping ({e.quick_crashes} quick crashes)", "error")
            )
        if e.last_s is not None and e.last_s > THROTTLE_WINDOW_S:
            out.append(
                Alert(
                    e.name,
                    "slow",
                    f"last generation {e.last_s:.1f} s > validators' {THROTTLE_WINDOW_S:.0f} s",
                )
            )
    return out


def score_alerts(recent: Sequence[ScoredLike]) -> list[Alert]:
    """A streak: the last LOW_SCORE_STREAK scored results all below the threshold."""
    scored = [r for r in recent if r.score is not None]
    tail = scored[-LOW_SCORE_STREAK:]
    if len(tail) < LOW_SCORE_STREAK or any(r.score is None or r.score >= QUALITY_THRESHOLD for r in tail):
        return []
    uids = ", ".join(str(u) for u in sorted({r.uid for r in tail}))
    return [
        Alert(
            "scores",
            "low_scores",
            f"last {len(tail)} scores < {QUALITY_THRESHOLD} (validators {uids}): more iters or guidance",
        )
    ]


def missed_alerts(missed_windows: int) -> list[Alert]:
    if missed_windows <= 0:
        return []
    return [Alert("validators", "missed", f"{missed_windows} missed window(s) in the last 4 h")]


def mining_alerts(state: Any, now: float) -> list[Alert]:
    """From a console.mining.state.MiningState (read only)."""
    return score_alerts(list(state.recent)) + missed_alerts(state.ledger.missed_windows(now))


def collect(
    gpus: GpuSnapshot | None,
    endpoints: Iterable[EndpointLike],
    mining_state: Any | None = None,
    now: float | None = None,
    remote_gpus: Sequence[tuple[str, GpuSnapshot]] = (),
) -> list[Alert]:
    alerts = gpu_alerts(gpus) + [a for box, snap in remote_gpus for a in gpu_alerts(snap, box)]
    alerts += endpoint_alerts(endpoints)
    if mining_state is not None and now is not None:
        alerts += mining_alerts(mining_state, now)
    return alerts
