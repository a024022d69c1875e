"""Counters and the recent-generations ring behind `GET /stats` (torch-free).

Thread-safe: the event loop records requests, and the self-scoring thread writes scores
into entries after the response has gone out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

RECENT_LIMIT = 50
PROMPT_PREVIEW_CHARS = 200
THROUGHPUT_WINDOW_S = 3600.0


@dataclass
class RecentGeneration:
    id: int
    finished_at: float  # unix seconds
    time_s: float
    splats: int
    timings: dict[str, float]
    prompt: str  # truncated to PROMPT_PREVIEW_CHARS
    preset: str
    score: float | None = None  # filled later by the optional scorer hook


@dataclass
class ServiceStats:
    queue_limit: int
    started_at: float = field(default_factory=time.monotonic)
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    dropped: int = 0  # clients that went away while queued
    image_prompts: int = 0  # image tasks refused at once (no image-to-3D preset)
    _recent: deque[RecentGeneration] = field(default_factory=lambda: deque(maxlen=RECENT_LIMIT))
    _finished: deque[float] = field(default_factory=deque)  # monotonic finish times, last hour
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_ok(
        self, time_s: float, splats: int, timings: dict[str, float], prompt: str, preset: str
    ) -> RecentGeneration:
        with self._lock:
            entry = RecentGeneration(
                id=self._next_id,
                finished_at=time.time(),
                time_s=round(time_s, 4),
                splats=splats,
                timings={k: round(float(v), 4) for k, v in timings.items()},
                prompt=prompt[:PROMPT_PREVIEW_CHARS],
                preset=preset,
            )
            self._next_id += 1
            self.ok += 1
            self._recent.append(entry)
            self._finished.append(time.monotonic())
            return entry

    def record_failed(self) -> None:
        with self._lock:
            self.failed += 1

    def record_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def record_image_prompt(self) -> None:
        with self._lock:
            self.image_prompts += 1

    def record_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def set_score(self, entry_id: int, score: float) -> bool:
        """Store a self-score on a recent entry; False when it has left the ring."""
        with self._lock:
            for entry in self._recent:
                if entry.id == entry_id:
                    entry.score = float(score)
                    return True
        return False

    def mean_time_s(self, last: int = 10) -> float | None:
        """Mean engine time of the last `last` generations; None before the first."""
        with self._lock:
            times = [e.time_s for e in list(self._recent)[-last:]]
        return sum(times) / len(times) if times else None

    def throughput_per_hour(self, now: float | None = None) -> float:
        """Generations finished in the last hour, scaled up while uptime is under an hour."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._finished and now - self._finished[0] > THROUGHPUT_WINDOW_S:
                self._finished.popleft()
            count = len(self._finished)
        # Extrapolate while younger than the window (at least a minute, so one early result
        # does not read as thousands an hour).
        window = min(THROUGHPUT_WINDOW_S, max(now - self.started_at, 60.0))
        return round(count * THROUGHPUT_WINDOW_S / window, 2)

    def snapshot(self, in_flight: int, queue_depth: int, gpu_memory: dict[str, int] | None) -> dict[str, Any]:
        throughput = self.throughput_per_hour()
        with self._lock:
            return {
                "requests": {
                    "ok": self.ok,
                    "failed": self.failed,
                    "rejected": self.rejected,
                    "dropped": self.dropped,
                    "image_prompts": self.image_prompts,
                },
                "in_flight": in_flight,
                "queue_depth": queue_depth,
                "queue_limit": self.queue_limit,
                "uptime_s": round(time.monotonic() - self.started_at, 2),
                "recent": [asdict(e) for e in self._recent],
                "throughput_per_hour": throughput,
                "gpu_memory": gpu_memory,
            }
