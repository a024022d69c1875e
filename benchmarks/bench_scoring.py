"""Time one validator-style score on this CPU machine, per stage.

Default: the tiny random CLIP (gen404-tiny) on hamburger.ply and hamburger.spz, 16 views at a
reduced size and at the validators' 518 px, torch rasterizer. `--model convnext_large_d` times the
full architecture with random weights (slow on CPU). Results are medians over `--repeats`.

    python -m benchmarks.bench_scoring [--sizes 64 518] [--repeats 3] [--model gen404-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from engine.scoring.scorer import Scorer

REPO = Path(__file__).resolve().parents[1]

VECTORS = REPO / "tests" / "vectors"
STAGES = ["decode", "gate", "transform", "render", "clip", "total"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gen404-tiny")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 518])
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", nargs="+", default=["hamburger.ply", "hamburger.spz"])
    args = p.parse_args()

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"CPU scoring benchmark: {machine}, {torch.get_num_threads()} threads, load average {load:.1f}",
        file=sys.stderr,
    )
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        scorer = Scorer(args.model, size=size, views=args.views, device="cpu", random_weights=True)
        scorer.load()
        load_s = time.perf_counter() - t0
        for name in args.files:
            data = (VECTORS / name).read_bytes()
            runs = [scorer.score(data, "a hamburger") for _ in range(args.repeats)]
            med = {s: statistics.median(r.timings.get(s, 0.0) for r in runs) for s in STAGES}
            best = min(r.timings["total"] for r in runs)
            rows.append(
                {
                    "file": name,
                    "size": size,
                    "splats": runs[0].splats,
                    "load_s": load_s,
                    "min_total": best,
                    **med,
                }
            )
            print(
                f"{name:14s} {size:4d} px x{args.views}: "
                + "  ".join(f"{s} {med[s]:7.3f}" for s in STAGES)
                + f" s (median of {args.repeats}, best total {best:.3f} s; model load {load_s:.1f} s)",
                file=sys.stderr,
            )
    print(json.dumps({"machine": machine, "model": args.model, "views": args.views, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
