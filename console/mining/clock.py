"""Injectable clocks: wall time, a scaled clock for compressed-time rehearsals, a manual one for tests."""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from typing import Protocol


class Clock(Protocol):
    """Unix seconds plus a sleep measured on the same clock."""

    @property
    def scale(self) -> float: ...

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    scale = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated unix time that runs `scale` times faster than the wall clock.

    Everything measured on it runs fast: a cooldown of 300 s passes in 300 / scale wall seconds,
    and a generation that takes 1 wall second counts as `scale` simulated seconds.
    """

    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self._scale = float(scale)
        self._start = time.time() if start is None else start
        self._mono0 = time.monotonic()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._start + (time.monotonic() - self._mono0) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)


class ManualClock:
    """A clock that only moves when told to; `sleep` advances it (single-task tests) or yields."""

    scale = 1.0

    def __init__(self, start: float = 1_800_000_000.0, advance_on_sleep: bool = True) -> None:
        self._now = start
        self._advance_on_sleep = advance_on_sleep

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, t: float) -> None:
        self._now = t

    async def sleep(self, seconds: float) -> None:
        if self._advance_on_sleep:
            self._now += max(0.0, seconds)
        await asyncio.sleep(0)


class VirtualClock:
    """Discrete-event time for benchmarks: once every participant task is asleep on this clock, the
    earliest sleep completes at once and time jumps to it. Real work (HTTP, compression) takes no
    virtual time; a rehearsal charges generation time explicitly (RehearsalMiner's `task_time`).
    `participants` must equal the number of tasks that sleep on it (workers, tickers, a stopper).
    """

    scale = float("inf")

    def __init__(self, participants: int, start: float = 1_800_000_000.0) -> None:
        self.participants = participants
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._sleeping = 0

    def now(self) -> float:
        return self._now

    def freeze(self) -> None:
        """Stop time here (the end of a run): no sleep completes any more."""
        self.participants = sys.maxsize

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), self._seq, fut))
        self._sleeping += 1
        self._kick()
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                self._sleeping -= 1
            raise

    def _kick(self) -> None:
        if self._sleeping >= self.participants:
            asyncio.get_running_loop().call_soon(self._advance)

    def _advance(self) -> None:
        while self._sleeping >= self.participants and self._heap:
            t, _, fut = heapq.heappop(self._heap)
            if fut.done():
                continue
            self._now = max(self._now, t)
            self._sleeping -= 1
            fut.set_result(None)
            return
