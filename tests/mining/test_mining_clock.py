"""Clocks: the scaled clock for demos, the virtual one for benchmarks."""

from __future__ import annotations

import asyncio
import time

from console.mining.clock import ScaledClock, VirtualClock


async def test_scaled_clock_runs_fast_and_sleeps_short() -> None:
    clock = ScaledClock(100.0, start=0.0)
    t0 = time.monotonic()
    await clock.sleep(10.0)  # 10 simulated seconds = 0.1 s
    wall = time.monotonic() - t0
    assert 0.09 <= wall < 0.5
    assert clock.now() >= 10.0


async def test_virtual_clock_runs_sleepers_in_time_order_without_waiting() -> None:
    clock = VirtualClock(participants=2, start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, step: float, n: int) -> None:
        for _ in range(n):
            await clock.sleep(step)
            woke.append((name, clock.now()))
        await clock.sleep(1e9)  # stays a participant until cancelled

    t0 = time.monotonic()
    tasks = [asyncio.create_task(sleeper("a", 300.0, 3)), asyncio.create_task(sleeper("b", 120.0, 5))]
    while len(woke) < 8:
        await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert time.monotonic() - t0 < 1.0  # 900 virtual seconds, no real waiting
    assert [t for _, t in woke] == sorted(t for _, t in woke)
    assert ("a", 900.0) in woke and ("b", 600.0) in woke


async def test_frozen_virtual_clock_stops_time() -> None:
    clock = VirtualClock(participants=1, start=0.0)
    await clock.sleep(5.0)
    clock.freeze()
    task = asyncio.create_task(clock.sleep(5.0))
    await asyncio.sleep(0.01)
    assert not task.done() and clock.now() == 5.0
    task.cancel()
