#!/usr/bin/env python
"""Time one MVDream SDS step (4 views) on the full-size architecture with random weights.

Random weights do the same arithmetic as the real ones, so this needs no download. For each
dtype (bf16, fp32) and ref_size (256, 128) it reports, after warm-up and with
torch.cuda.synchronize around every timed region:
  step      sds_loss (resize, VAE encode, noise, UNet on [cond, uncond] x 4 views) + backward
  unet      the UNet forward alone, batch 8 (4 views x CFG)
  vae       VAE encoder forward + backward for the 4 views
  peak      peak GPU memory allocated during the step
Also prints the UNet parameter count. Usage (repo root):
  python -m benchmarks.gpu_guidance_full [--iters 20] [--warmup 5] [--dtypes bf16,fp32] [--refs 256,128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

from engine.guidance import build_guidance


def _timed(fn: Callable[[], object], iters: int, warmup: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _bench_ref(
    guidance, embeds, c2w, ref: int, dtype: str, n_unet: int, iters: int, warmup: int, cuda: bool
) -> dict:
    device = c2w.device
    guidance.ref_size = ref
    images = torch.rand(4, 3, ref, ref, device=device, requires_grad=True)
    latent = ref // 8
    noisy = torch.randn(4, 4, latent, latent, device=device, dtype=guidance.dtype)
    t = torch.full((4,), 500, device=device, dtype=torch.long)

    def step() -> None:
        images.grad = None
        guidance.sds_loss(images, c2w, embeds, 300, 1000, 100.0).backward()

    def unet() -> None:
        guidance.predict_noise(noisy, t, embeds, c2w, 100.0)

    def vae() -> None:
        images.grad = None
        guidance.encode_images(images).float().sum().backward()

    row: dict = {"dtype": dtype, "ref_size": ref, "views": 4, "unet_params": n_unet}
    try:
        _timed(step, 0, warmup, cuda)  # warm-up first: cudnn.benchmark's trial workspaces are not the step's
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        row["step_ms"] = statistics.median(_timed(step, iters, 0, cuda))
        if cuda:
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["unet_fwd_ms"] = statistics.median(_timed(unet, iters, warmup, cuda))
        row["vae_fwd_bwd_ms"] = statistics.median(_timed(vae, iters, warmup, cuda))
    except Exception as exc:  # keep going: report what failed, time the rest
        traceback.print_exc()
        row["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(row), flush=True)
    return row


def bench(dtype: str, refs: list[int], device: str, iters: int, warmup: int) -> list[dict]:
    cuda = device.startswith("cuda")
    preset = SimpleNamespace(guidance="mvdream", weights="random", dtype=dtype, ref_size=refs[0], seed=0)
    t0 = time.perf_counter()
    guidance = build_guidance(preset, device, random_weights=True)
    build_s = time.perf_counter() - t0
    n_unet = sum(p.numel() for p in guidance.unet.parameters())
    n_camera = sum(p.numel() for p in guidance.unet.class_embedding.parameters())
    print(
        f"[{dtype}] built in {build_s:.1f} s; UNet {n_unet:,} params ({n_camera:,} camera embedding)",
        flush=True,
    )
    embeds = guidance.encode_prompt("a wooden chair with a red cushion", "blurry, low quality")
    c2w = torch.eye(4, device=device).repeat(4, 1, 1)
    c2w[:, 2, 3] = 3.0
    rows = [_bench_ref(guidance, embeds, c2w, ref, dtype, n_unet, iters, warmup, cuda) for ref in refs]
    del guidance
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--refs", default="256,128")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available: run on the GPU machine (or --device cpu for a slow smoke run)")
        return 2
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # as a production run would set
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    refs = [int(r) for r in args.refs.split(",")]
    rows = []
    for dtype in args.dtypes.split(","):
        try:
            rows += bench(dtype, refs, args.device, args.iters, args.warmup)
        except Exception as exc:
            traceback.print_exc()
            rows.append({"dtype": dtype, "error": f"{type(exc).__name__}: {exc}"})
    print("\n| dtype | ref | step ms (SDS fwd+bwd) | UNet fwd ms (x8) | VAE enc fwd+bwd ms | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['dtype']} | {r.get('ref_size', '-')} | error: {r['error'][:60]} | | | |")
        else:
            peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"
            print(
                f"| {r['dtype']} | {r['ref_size']} | {r['step_ms']:.1f} | {r['unet_fwd_ms']:.1f} "
                f"| {r['vae_fwd_bwd_ms']:.1f} | {peak} |"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
