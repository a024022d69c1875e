"""The GIL hand-over cost a GPU generation pays beside a compiling thread, without a GPU.

A generation on a GPU is host Python that keeps giving the GIL away for a moment: CUDA-graph
replays, stream syncs and device-to-host copies release it while the driver works. Beside a
thread that runs Python without pause (inductor compiling), every such release hands the GIL to
that thread, and the generation gets it back only when the interpreter forces a switch: after
`sys.getswitchinterval()` (5 ms by default). This probe models one generation step as `--work-us`
of Python work and `--releases` short GIL-free waits (`time.sleep`, as a replay or sync would
be), and times `--steps` steps alone, then beside a pure-Python busy thread, for each interval:

    python -m benchmarks.probes.gil_convoy [--intervals 0.005,0.001,0.0005,0.0002]

What it measures is CPython's scheduling, the same on any box with a spare core; the real
figures are the endpoint's (docs/benchmarks.md: a request served while the compiled state
builds beside it, session 5 at a 0.2 ms interval vs session 7 at the default 5 ms, H200).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def step(work_us: float, releases: int, release_us: float) -> None:
    deadline = time.perf_counter() + work_us / 1e6
    while time.perf_counter() < deadline:  # host Python: launches, autograd bookkeeping
        pass
    for _ in range(releases):
        time.sleep(release_us / 1e6)  # GIL released, as around a graph replay or a sync


def timed_steps(steps: int, work_us: float, releases: int, release_us: float) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step(work_us, releases, release_us)
    return time.perf_counter() - started


def busy(stop: threading.Event) -> None:
    table: dict[int, int] = {}
    n = 0
    while not stop.is_set():  # pure Python, never blocking: a compiler's code generation
        n += 1
        table[n % 1024] = n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", default="0.005,0.001,0.0005,0.0002")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--work-us", type=float, default=2000.0)
    ap.add_argument("--releases", type=int, default=8)
    ap.add_argument("--release-us", type=float, default=100.0)
    args = ap.parse_args()
    shape = (args.steps, args.work_us, args.releases, args.release_us)
    alone = timed_steps(*shape)
    rows = []
    default = sys.getswitchinterval()
    for interval in (float(x) for x in args.intervals.split(",")):
        sys.setswitchinterval(interval)
        stop = threading.Event()
        thread = threading.Thread(target=busy, args=(stop,), daemon=True)
        thread.start()
        try:
            beside = timed_steps(*shape)
        finally:
            stop.set()
            thread.join()
            sys.setswitchinterval(default)
        rows.append(
            {
                "interval_ms": interval * 1e3,
                "beside_s": round(beside, 3),
                "slowdown": round(beside / alone, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"alone_s": round(alone, 3), "steps": args.steps, "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
