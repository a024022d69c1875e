#!/usr/bin/env python
"""Which ops make up the VAE encoder backward at a preset's shape (the cost text_mv still pays).

text_mv's profile (docs/benchmarks.md, second round) leaves ~7.9 ms a step in the graphed VAE
encoder backward plus 31 aten elementwise kernels a step whose source is unattributed. Inside a
CUDA graph the profiler sees one opaque `GraphedBackward`; this runs the same compiled encoder
moments *without* graphs so every aten op shows, grouped by input shape. Full-size SD 2.1 VAE,
random weights, bf16, channels-last and math attention as the engine sets them.
    python benchmarks/gpu_vae_backward_probe.py [--ref 256] [--views 4] [--no-compile]
    TORCH_LOGS=output_code python benchmarks/gpu_vae_backward_probe.py   # inductor's code too
CPU works for a quick check (--device cpu --ref 32 --dtype fp32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from engine.guidance.configs import SD21_VAE_CONFIG  # noqa: E402
from engine.guidance.sds import DTYPES, EncoderMoments, use_math_vae_attention  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=int, default=256)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD21_VAE_CONFIG).eval().requires_grad_(False)
    torch.nn.Module.to(vae, device, DTYPES[args.dtype])
    torch.nn.Module.to(vae, memory_format=torch.channels_last)
    use_math_vae_attention(vae)
    moments = EncoderMoments(vae)
    encode = moments if args.no_compile else torch.compile(moments, dynamic=False)
    x = torch.rand(args.views, 3, args.ref, args.ref, device=device, dtype=DTYPES[args.dtype]) * 2 - 1

    def step() -> None:
        inp = x.clone().requires_grad_(True)
        mean, std = encode(inp)
        (mean.float().sum() + std.float().sum()).backward()

    for _ in range(3):  # compile, autotune, allocator warm-up
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(args.iters):
            step()
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    name = torch.cuda.get_device_name() if cuda else "CPU"
    mode = "eager" if args.no_compile else "compiled"
    print(
        f"{name}, torch {torch.__version__}, {args.dtype}, {mode}, {args.views} x {args.ref} px, "
        f"{args.iters} fwd+bwd steps (divide totals by {args.iters} for per-step figures)"
    )
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=args.rows)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
