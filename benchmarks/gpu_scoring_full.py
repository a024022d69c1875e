"""Full-size validator-style scoring on one CUDA GPU, per stage: what one local validation costs.

Default: the validators' architectures with *random* (seeded) weights, the same arithmetic as the
real ones with nothing downloaded: convnext_large_d CLIP, DINOv2-small quality model, LPIPS AlexNet,
SSIM, 16 views at 518 px through gsplat, as the subnet's validation service does. The subnet
quotes about 0.35 s per validation on a good GPU; `validation_ms` (clip + quality + ssim + lpips,
what its validate_text_to_gs times) and `total` (decode to score) are both reported. Inputs: the test vectors (hamburger.ply, robocop.spz) when
found, plus synthetic results of the sizes given; `--result FILE` adds others.

    python -m benchmarks.gpu_scoring_full [--repeats 10] [--synthetic 50000 250000] [--result F ...]

Needs torch with CUDA, open_clip_torch and (for the gsplat backend) gsplat; without gsplat it
says so and uses the torch rasterizer. gsplat compiles its CUDA code on first use (about
1-1.5 min on a fresh machine): that lands in the warm-up figure, reported apart. Prints a table
on stderr and JSON on stdout (also written to $OUT/gpu_scoring_full.json when OUT is set).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.formats.ply import write_ply
from engine.render import gsplat_backend
from engine.scoring.scorer import Scorer
from engine.splats import Splats

REPO = Path(__file__).resolve().parents[1]

VECTOR_DIRS = [REPO / "tests" / "vectors", REPO / ".bench_data"]
VECTOR_FILES = ["hamburger.ply", "robocop.spz"]
STAGES = ["decode", "gate", "transform", "render", "clip", "quality", "ssim", "lpips", "total"]
METRICS = ["clip", "quality", "ssim", "lpips"]


def synthetic_result(n: int, seed: int = 0) -> bytes:
    """A plausible result: Gaussians in a ball, random colours, rotations and sizes (PLY bytes)."""
    rng = np.random.default_rng(seed)
    s = Splats.empty(n)
    d = rng.normal(size=(n, 3))
    s.positions[:] = 0.5 * d / np.linalg.norm(d, axis=1, keepdims=True) * rng.random((n, 1)) ** (1 / 3)
    s.sh_dc[:] = rng.normal(0.0, 1.0, (n, 3))
    s.opacities[:] = rng.normal(0.0, 2.0, n)
    s.scales[:] = np.log(rng.uniform(0.003, 0.03, (n, 3)))
    q = rng.normal(size=(n, 4))
    s.rotations[:] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return write_ply(s, include_normals=False)


def inputs(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for name in VECTOR_FILES:
        for folder in VECTOR_DIRS:
            if (folder / name).is_file():
                found.append((name, (folder / name).read_bytes()))
                break
    found += [(Path(p).name, Path(p).read_bytes()) for p in args.result]
    found += [(f"synthetic-{n}.ply", synthetic_result(n)) for n in args.synthetic]
    return found


def clip_microbench(scorer: Scorer, views: int, size: int, repeats: int) -> dict[str, float]:
    """CLIP alone: 16 uint8 renders -> preprocess + image tower; text tower uncached and cached."""
    images = torch.randint(0, 256, (views, size, size, 3), dtype=torch.uint8, device=scorer.device)
    out: dict[str, list[float]] = {"image_tower_ms": [], "text_tower_ms": [], "text_cached_ms": []}
    for i in range(repeats + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        scorer.clip.image_features(images)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        scorer.clip.text_features(f"a prompt never seen before {i}")
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        scorer.clip.text_features(f"a prompt never seen before {i}")
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        if i:  # the first round is warm-up
            out["image_tower_ms"].append(1e3 * (t1 - t0))
            out["text_tower_ms"].append(1e3 * (t2 - t1))
            out["text_cached_ms"].append(1e3 * (t3 - t2))
    return {k: statistics.median(v) for k, v in out.items()}


def reference_check(backend: str) -> dict | None:
    """The validator's own render of hamburger.ply (1080 px, azimuth 45, elevation 0, radius 3,
    bbox 1.0) against ours through the same backend: PSNR in dB, full size."""
    from PIL import Image

    from engine.formats.ply import read_ply
    from engine.scoring.views import render_orbit

    for folder in VECTOR_DIRS:
        ply, png = folder / "hamburger.ply", folder / "hamburger_validator_render.png"
        if ply.is_file() and png.is_file():
            splats = read_ply(ply.read_bytes())
            ours = render_orbit(splats, 0.0, 45.0, 3.0, 1080, bbox_size=1.0, device="cuda", backend=backend)
            ref = np.asarray(Image.open(png).convert("RGB"), np.float64)
            mse = float(np.mean((ours.cpu().numpy().astype(np.float64) - ref) ** 2))
            exact = float(np.mean(ours.cpu().numpy() == ref.astype(np.uint8)))
            return {"psnr_db": 10 * np.log10(255.0**2 / max(mse, 1e-12)), "equal_values": exact}
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnext_large_d")
    p.add_argument("--quality-model", default="dinov2-small")
    p.add_argument("--size", type=int, default=518)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backend", choices=("auto", "gsplat", "torch"), default="auto")
    p.add_argument("--synthetic", type=int, nargs="*", default=[50_000, 250_000])
    p.add_argument("--result", action="append", default=[], help="another PLY/SPZ result to time")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_scoring_full: no CUDA device; run it on a GPU machine", file=sys.stderr)
        return 2
    if args.backend == "auto" and not gsplat_backend.available():
        print(
            "gpu_scoring_full: gsplat does not import: timing the torch rasterizer instead", file=sys.stderr
        )

    report: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "gsplat": gsplat_backend.available(),
        "model": args.model,
        "quality_model": args.quality_model,
        "weights": "random",
        "size": args.size,
        "views": args.views,
        "repeats": args.repeats,
    }
    t0 = time.perf_counter()
    scorer = Scorer(
        args.model,
        size=args.size,
        views=args.views,
        device="cuda",
        random_weights=True,
        backend=args.backend,
        quality_model=args.quality_model,
    )
    scorer.load()
    torch.cuda.synchronize()
    report["load_s"] = time.perf_counter() - t0
    report["backend"] = scorer.backend
    report["clip_only"] = clip_microbench(scorer, args.views, args.size, args.repeats)
    report["reference_render"] = reference_check(scorer.backend)

    report["results"] = []
    for name, data in inputs(args):
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        first = scorer.score(data, "a hamburger with lettuce and cheese")
        warm_s = time.perf_counter() - t0
        runs = [
            scorer.score(data, f"a hamburger with lettuce and cheese {i % 2}") for i in range(args.repeats)
        ]
        stages = {
            s: {
                "median_ms": 1e3 * statistics.median(r.timings.get(s, 0.0) for r in runs),
                "min_ms": 1e3 * min(r.timings.get(s, 0.0) for r in runs),
            }
            for s in STAGES
        }
        validation = [1e3 * sum(r.timings.get(m, 0.0) for m in METRICS) for r in runs]
        stages["validation"] = {"median_ms": statistics.median(validation), "min_ms": min(validation)}
        entry = {
            "name": name,
            "bytes": len(data),
            "splats": first.splats,
            "gate": first.gate_reason,
            "score": first.score,
            "parts": {
                "iqa": first.iqa,
                "alignment": first.alignment_raw,
                "ssim": first.ssim,
                "lpips": first.lpips,
            },
            "first_call_s": warm_s,
            "stages": stages,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
        }
        report["results"].append(entry)
        print(
            f"{name:22s} {first.splats:>8d} splats  first {warm_s:7.2f} s  "
            + "  ".join(f"{s} {stages[s]['median_ms']:7.1f}" for s in [*STAGES, "validation"])
            + f" ms (median of {args.repeats})  peak {entry['peak_gpu_mib']:.0f} MiB",
            file=sys.stderr,
        )
    if report["reference_render"]:
        ref = report["reference_render"]
        print(
            f"reference render (1080 px) vs the validator's PNG: PSNR {ref['psnr_db']:.2f} dB, "
            f"{ref['equal_values']:.1%} of values identical",
            file=sys.stderr,
        )
    c = report["clip_only"]
    print(
        f"load {report['load_s']:.1f} s; CLIP alone: images {c['image_tower_ms']:.1f} ms, text "
        f"{c['text_tower_ms']:.1f} ms (cached {c['text_cached_ms']:.2f} ms) on {report['gpu']} ({scorer.backend})",
        file=sys.stderr,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_scoring_full.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
