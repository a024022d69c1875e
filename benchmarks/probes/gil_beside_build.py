"""Generations served while a compile runs beside them on another thread, for one GIL switch interval.

What an endpoint does while "warming" or during a preset switch: would a shorter interval keep the
compiling thread from slowing the generations? One process per interval, each with an empty
inductor cache so all compile the same cold graphs:

    for i in 0.05 0.005 0.0002; do TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) \\
        python -m benchmarks.probes.gil_beside_build --interval $i [--device cuda --preset text_mv_fast]; done

CPU dev box (2 cores, smoke preset; 2026-11-29): alone 0.78-0.83 s; beside a 58-62 s compile, median
1.455 s at 50 ms, 1.473 s at 5 ms (Python's default), 1.518 s at 0.2 ms: the interval changes nothing
there (the slowdown is the compile taking the cores; a CPU generation seldom releases the GIL).
On a GPU it does matter (session 7): a generation releases the GIL at every graph replay and
sync, see benchmarks/probes/gil_convoy.py and engine/service/gil_turns.py, which now shortens
the interval while a build runs beside serving.

Prints the generation time alone (median of 3), then every generation finished while the compile
ran, and their median. On a CPU box the compile's C++ compiler processes also compete for cores,
so compare the two intervals with each other, on the same box, not with a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, required=True, help="sys.setswitchinterval while compiling")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from engine.pipeline import Generator
    from engine.presets import load_preset

    torch.set_num_threads(1)  # the generation's own ops on one core: the contention left is the GIL's
    preset = dataclasses.replace(load_preset(args.preset), compile=False)
    generator = Generator(preset, device=args.device, random_weights=True, sync_timings=False)
    generator.load()
    generator.warmup(force=True)

    def one() -> float:
        started = time.perf_counter()
        generator.generate("a red wooden chair", seed=1)
        return time.perf_counter() - started

    alone = statistics.median(one() for _ in range(3))
    compiled = generator.fork(dataclasses.replace(preset, compile=True))
    build_s: list[float] = []

    def build() -> None:
        started = time.perf_counter()
        compiled.warmup(force=True)
        build_s.append(time.perf_counter() - started)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(args.interval)
    thread = threading.Thread(target=build, name="compile-beside")
    thread.start()
    during = []
    while thread.is_alive():
        during.append(one())
    thread.join()
    sys.setswitchinterval(previous)
    report = {
        "interval_s": args.interval,
        "device": args.device,
        "generation_alone_s": round(alone, 3),
        "build_s": round(build_s[0], 1) if build_s else None,
        "generations_during": len(during),
        "during_median_s": round(statistics.median(during), 3) if during else None,
        "during_max_s": round(max(during), 3) if during else None,
        "compile_failure": compiled.compile_failure,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
