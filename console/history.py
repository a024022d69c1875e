"""The last hour of the console's figures, for the history plots (no Textual).

`History` keeps one time-bounded ring of (t, value) samples per named series. The App records a
sample per refresh (throughput, generation time, GPU util/temp/power per GPU) and one per scored
result; samples older than `window_s` are dropped and each ring is capped at `max_samples`, so
memory stays bounded however fast the refresh is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from console.gpu import GpuSnapshot

HOUR_S = 3600.0
MAX_SAMPLES = 3600  # one a second for an hour


@dataclass
class History:
    window_s: float = HOUR_S
    max_samples: int = MAX_SAMPLES
    series: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def record(self, name: str, t: float, value: float | None) -> None:
        """Add one sample; None (a figure not known right now) is skipped, not stored as 0."""
        if value is None:
            return
        ring = self.series.setdefault(name, deque(maxlen=self.max_samples))
        if ring and t < ring[-1][0]:
            return  # out of order (a late sample): the plots assume rising time
        ring.append((t, float(value)))
        self._expire(ring, t)

    def _expire(self, ring: deque[tuple[float, float]], now: float) -> None:
        horizon = now - self.window_s
        while ring and ring[0][0] < horizon:
            ring.popleft()

    def points(self, name: str, now: float) -> list[tuple[float, float]]:
        """Samples of `name` within the window ending at `now`, oldest first."""
        ring = self.series.get(name)
        if not ring:
            return []
        self._expire(ring, now)
        return list(ring)

    def names(self) -> list[str]:
        return sorted(self.series)

    # -- what the console records ------------------------------------------------------------
    def record_gpus(self, snapshot: GpuSnapshot, t: float) -> None:
        for g in snapshot.gpus:
            self.record(f"gpu{g.index}.util", t, g.util)
            self.record(f"gpu{g.index}.temp", t, g.temp)
            self.record(f"gpu{g.index}.power", t, g.power)

    def record_endpoints(
        self, per_hour: Iterable[float | None], last_s: Iterable[float | None], t: float
    ) -> None:
        """Throughput: the sum over endpoints that report one; generation time: their mean."""
        rates = [r for r in per_hour if r is not None]
        self.record("throughput", t, sum(rates) if rates else None)
        times = [s for s in last_s if s is not None]
        self.record("gen_time", t, sum(times) / len(times) if times else None)

    def record_scores(self, results: Iterable[tuple[float, float | None]]) -> None:
        """Scored results as (finished_at, score); those at or before the newest kept are skipped,
        so the App can hand over the mining state's recent list on every refresh."""
        ring = self.series.get("score")
        newest = ring[-1][0] if ring else float("-inf")
        for t, score in sorted(results, key=lambda r: r[0]):
            if t > newest and score is not None:
                self.record("score", t, score)
