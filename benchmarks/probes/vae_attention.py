#!/usr/bin/env python
"""VAE encoder forward + backward per SDS step, SDPA vs math attention, side by side (CUDA).

The SD 2.1 VAE's mid-block attention has one 512-wide head: SDPA cannot use flash kernels for it.
This times the graphed encoder (as the engine runs it) at a preset's shape with each attention
processor, full-size random weights, in one process. Usage (repo root, GPU box):
    python -m benchmarks.probes.vae_attention [--ref 256] [--views 4] [--iters 50]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from engine.guidance.configs import SD21_VAE_CONFIG
from engine.guidance.graphs import graph_vae_encoder
from engine.guidance.sds import EncoderMoments


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=int, default=256)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD21_VAE_CONFIG).to("cuda", torch.bfloat16).eval().requires_grad_(False)
    torch.nn.Module.to(vae, memory_format=torch.channels_last)
    x = torch.rand(args.views, 3, args.ref, args.ref, device="cuda", dtype=torch.bfloat16) * 2 - 1
    results = {}
    for name, processor in (("sdpa", AttnProcessor2_0()), ("math", AttnProcessor())):
        vae.set_attn_processor(processor)
        encode = graph_vae_encoder(EncoderMoments(vae), x)
        grads = []
        for timed in (False, True):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.iters):
                inp = x.clone().requires_grad_(True)
                mean, std = encode(inp)
                (mean.float().sum() + std.float().sum()).backward()
            torch.cuda.synchronize()
            if timed:
                results[name] = (time.perf_counter() - start) / args.iters * 1e3
            grads.append(inp.grad.float())
        results[name + "_grad"] = grads[-1]
    diff = (results["sdpa_grad"] - results["math_grad"]).abs().max().item()
    scale = results["sdpa_grad"].abs().max().item()
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, channels-last, graphed")
    print(
        f"VAE encoder fwd+bwd, {args.views} x {args.ref} px: sdpa {results['sdpa']:.2f} ms, "
        f"math {results['math']:.2f} ms, ratio {results['sdpa'] / results['math']:.2f}x; "
        f"max |grad diff| {diff:.3g} (max |grad| {scale:.3g})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
