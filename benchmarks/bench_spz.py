"""SPZ codec speed against the subnet's reference (pyspz, C++ -O2) on the same kind of machine.

robocop.spz (267,776 splats, SH 0): decompress(spz, include_normals=False), and compress of that
PLY at level 1; hamburger.ply (52,709 splats) compress as a small case. Minimum of N runs,
since the dev box's cores are shared. The reference figures come from the steering folder's vectors README (measured with the subnet's pyspz).

    python -m benchmarks.bench_spz [--repeats 5] [--stages]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from engine.formats import ply, spz

ROOT = Path(__file__).resolve().parents[1]

VECTORS = ROOT / "tests" / "vectors"
REFERENCE_MS = {"robocop compress": 48.7, "robocop decompress": 26.4, "hamburger compress": 5.1}


def best_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Minimum wall and minimum CPU (process) time in ms. Everything here is single-threaded,
    so CPU time is what the wall time would be on an idle box: it leaves out the time spent
    waiting for a core that other processes hold."""
    fn()  # warm-up: page in the input, build the tables
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall) * 1e3, min(cpu) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="also time the parts of each direction")
    args = parser.parse_args()

    robocop = (VECTORS / "robocop.spz").read_bytes()
    robocop_ply = spz.decompress(robocop, include_normals=False)
    hamburger = (VECTORS / "hamburger.ply").read_bytes()
    cases = {
        "robocop compress": lambda: spz.compress(robocop_ply, 1),
        "robocop decompress": lambda: spz.decompress(robocop, False),
        "hamburger compress": lambda: spz.compress(hamburger, 1),
    }
    print(f"min of {args.repeats} runs; ratio = ours / reference; load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':<22}{'wall ms':>9}{'cpu ms':>9}{'ref ms':>9}{'wall/ref':>10}{'cpu/ref':>9}")
    for name, fn in cases.items():
        wall, cpu = best_ms(fn, args.repeats)
        ref = REFERENCE_MS[name]
        print(f"{name:<22}{wall:>9.1f}{cpu:>9.1f}{ref:>9.1f}{wall / ref:>10.2f}{cpu / ref:>9.2f}")

    if args.stages:
        splats = ply.read_ply(robocop_ply, copy=False)
        packed = spz.pack(splats)
        header, body = spz.read_payload(robocop)
        decoded = spz.unpack(header, body)
        stages = {
            "compress: parse PLY (views)": lambda: ply.read_ply(robocop_ply, copy=False),
            "compress: pack": lambda: spz.pack(splats),
            "compress: zstd level 1": lambda: spz._zstd_compress(packed, 1, 1),
            "decompress: zstd (bounded)": lambda: spz.read_payload(robocop),
            "decompress: unpack": lambda: spz.unpack(header, body),
            "decompress: write PLY": lambda: ply.write_ply(decoded, include_normals=False),
        }
        for name, fn in stages.items():
            wall, cpu = best_ms(fn, args.repeats)
            print(f"  {name:<30}{wall:>8.1f} ms wall {cpu:>8.1f} ms cpu")


if __name__ == "__main__":
    main()
