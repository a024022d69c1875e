"""Time one validator-style validation (render + CLIP + quality + SSIM + LPIPS + formula), per stage.

Default: CPU, the test architectures (gen404-tiny CLIP, gen404-tiny-dino quality; LPIPS is always
the full AlexNet) with seeded random weights, on hamburger.ply and hamburger.spz, 16 views at a
reduced size and at the validators' 518 px. `--full` times the validators' architectures
(convnext_large_d CLIP, DINOv2-small) with random weights; `--device cuda` is the GPU mode (for
the H200 figure see benchmarks/gpu_scoring_full.py). Results are medians over `--repeats`.

    python -m benchmarks.bench_scoring [--sizes 64 518] [--repeats 3] [--full] [--device cpu|cuda]
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
STAGES = ["decode", "gate", "transform", "render", "clip", "quality", "ssim", "lpips", "total"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the validators' architectures (random weights)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 518])
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", nargs="+", default=["hamburger.ply", "hamburger.spz"])
    args = p.parse_args()

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model, quality = (
        ("convnext_large_d", "dinov2-small") if args.full else ("gen404-tiny", "gen404-tiny-dino")
    )
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(
        f"scoring benchmark on {args.device}: {machine}, {torch.get_num_threads()} threads, "
        f"load average {load:.1f}; models {model} + {quality} + LPIPS alex (random weights)",
        file=sys.stderr,
    )
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        scorer = Scorer(
            model, size=size, views=args.views, device=args.device, random_weights=True, quality_model=quality
        )
        scorer.load()
        load_s = time.perf_counter() - t0
        for name in args.files:
            data = (VECTORS / name).read_bytes()
            scorer.score(data, "a hamburger")  # warm-up (first-call allocations, kernels)
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
    out = {
        "machine": machine,
        "device": args.device,
        "model": model,
        "quality_model": quality,
        "views": args.views,
    }
    print(json.dumps({**out, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
