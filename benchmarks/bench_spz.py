"""SPZ codec speed against the subnet's reference (pyspz, C++ -O2) on the same kind of machine.

robocop.spz (267,776 splats, SH 0): decompress(spz, include_normals=False), and compress of that
PLY at level 1; hamburger.ply (52,709 splats) compress as a small case. Minimum of N runs,
since the dev box's cores are shared. The reference figures come from ../shared/vectors/README.md.

    python benchmarks/bench_spz.py [--repeats 5] [--stages]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from engine.formats import ply, spz  # noqa: E402

VECTORS = ROOT.parent / "shared" / "vectors"
REFERENCE_MS = {"robocop compress": 48.7, "robocop decompress": 26.4, "hamburger compress": 5.1}


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: page in the input, build the tables
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


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
    print(
        f"{'case':<22}{'ours ms':>10}{'ref ms':>10}{'ratio':>8}   (min of {args.repeats}; ratio = ours / ref)"
    )
    for name, fn in cases.items():
        ours = best_ms(fn, args.repeats)
        ref = REFERENCE_MS[name]
        print(f"{name:<22}{ours:>10.1f}{ref:>10.1f}{ours / ref:>8.2f}")

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
            print(f"  {name:<30}{best_ms(fn, args.repeats):>8.1f} ms")


if __name__ == "__main__":
    main()
