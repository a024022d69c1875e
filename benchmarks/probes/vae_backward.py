#!/usr/bin/env python
"""The VAE encoder fwd+bwd at a preset's shape (the cost text_mv still pays): variants side by side,
and which kernels and ops make it up.

text_mv's profile (docs/benchmarks.md, second round) leaves ~7.9 ms a step in the graphed VAE
encoder backward plus 31 aten elementwise kernels a step whose source was unattributed. This
builds the encoder as the engine does (full-size SD 2.1 VAE, random weights, math attention,
LayoutGroupNorm, EncoderMoments, graph_vae_encoder), then:
  1. times each variant's graphed fwd+bwd step with CUDA events, in one process;
  2. profiles the first variant graphed (kernel names) and ungraphed (the aten op that launched
     each kernel, by input shape), and writes both chrome traces to --trace-dir.
A variant is tokens joined by '+': layout `cl` or `contig`; `compile` or `eager`; inductor knobs
`cdt` (coordinate-descent tuning), `autotune` (max-autotune), `nolayout` (no layout optimisation);
`nativegn` keeps ATen's GroupNorm in compiled code (the engine uses LayoutGroupNorm), `gnview`
takes the first layout-preserving form tried (var_mean over a (N, G, C/G, H, W) view).
    python -m benchmarks.probes.vae_backward --variants cl+compile,contig+compile --trace-dir out
CPU works for a quick check (--device cpu --ref 32 --dtype fp32; no graphs there).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch.profiler import ProfilerActivity, profile

from engine.guidance.configs import SD21_VAE_CONFIG
from engine.guidance.graphs import graph_vae_encoder
from engine.guidance.layout_norm import LayoutGroupNorm
from engine.guidance.sds import DTYPES, EncoderMoments, use_math_vae_attention

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
KNOBS = {  # variant token -> inductor config it sets
    "cdt": {"coordinate_descent_tuning": True},
    "autotune": {"max_autotune": True},
    "nolayout": {"layout_optimization": False},
}


class ViewGroupNorm(LayoutGroupNorm):
    """The first layout-preserving form (H200: its GN-backward reductions ran ~0.43 ms each)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        groups = x.unflatten(1, (self.num_groups, -1)).float()
        var, mean = torch.var_mean(groups, dim=tuple(range(2, groups.dim())), correction=0, keepdim=True)
        y = ((groups - mean) * torch.rsqrt(var + self.eps)).flatten(1, 2)
        shape = (-1,) + (1,) * (x.dim() - 2)
        return (y * self.weight.float().view(shape) + self.bias.float().view(shape)).to(x.dtype)


def parse_variant(spec: str) -> tuple[bool, bool, type[torch.nn.GroupNorm], dict[str, bool]]:
    """(channels_last, compiled, GroupNorm class, inductor config) for a variant spec."""
    tokens = spec.split("+")
    unknown = set(tokens) - {"cl", "contig", "compile", "eager", "nativegn", "gnview", *KNOBS}
    if unknown:
        raise SystemExit(f"unknown variant token(s) {sorted(unknown)} in {spec!r}")
    knobs = {k: v for token in tokens for k, v in KNOBS.get(token, {}).items()}
    norm = (
        torch.nn.GroupNorm
        if "nativegn" in tokens
        else ViewGroupNorm
        if "gnview" in tokens
        else LayoutGroupNorm
    )
    return "contig" not in tokens, "eager" not in tokens, norm, knobs


def build_encoder(vae: torch.nn.Module, spec: str, x: torch.Tensor, graphs: bool) -> Encoder:
    channels_last, compiled, norm, knobs = parse_variant(spec)
    for sub in vae.modules():
        if isinstance(sub, torch.nn.GroupNorm):
            sub.__class__ = norm
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.nn.Module.to(vae, memory_format=fmt)
    torch._dynamo.reset()
    for key, value in knobs.items():
        setattr(torch._inductor.config, key, value)
    moments = EncoderMoments(vae)
    encode: Encoder = torch.compile(moments, dynamic=False) if compiled else moments
    return graph_vae_encoder(encode, x) if graphs else encode


def reset_knobs(defaults: dict[str, object]) -> None:
    for key, value in defaults.items():
        setattr(torch._inductor.config, key, value)


def make_step(encode: Encoder, x: torch.Tensor) -> Callable[[], None]:
    # the SDS backward: a gradient on the posterior sample (mean + std * eps) reaches the images
    g = torch.randn_like(x[:, :1, ::8, ::8].expand(-1, 4, -1, -1).float())
    eps = torch.randn_like(g)

    def step() -> None:
        inp = x.detach().requires_grad_(True)
        mean, std = encode(inp)
        ((mean.float() + std.float() * eps) * g).sum().backward()

    return step


def time_step(step: Callable[[], None], iters: int, cuda: bool) -> float:
    """Median ms of one fwd+bwd step."""
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile_steps(step: Callable[[], None], iters: int, cuda: bool, trace: Path | None):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(iters):
            step()
        if cuda:
            torch.cuda.synchronize()
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    return prof


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="cl+compile,cl+compile+nativegn,contig+compile")
    ap.add_argument("--ref", type=int, default=256)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--iters", type=int, default=30, help="timed steps per variant")
    ap.add_argument("--profile-iters", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--trace-dir", type=Path, default=None)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD21_VAE_CONFIG).eval().requires_grad_(False)
    torch.nn.Module.to(vae, device, DTYPES[args.dtype])
    use_math_vae_attention(vae)
    x = torch.rand(args.views, 3, args.ref, args.ref, device=device, dtype=DTYPES[args.dtype]) * 2 - 1
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.dtype}, {args.views} x {args.ref} px", flush=True)
    defaults = {k: getattr(torch._inductor.config, k) for knobs in KNOBS.values() for k in knobs}
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)

    variants = args.variants.split(",")
    for i, spec in enumerate(variants):
        t0 = time.perf_counter()
        step = make_step(build_encoder(vae, spec, x, graphs=cuda), x)
        for _ in range(3):  # compile (ungraphed), cuDNN autotuning, allocator
            step()
        setup = time.perf_counter() - t0
        ms = time_step(step, args.iters, cuda)
        graphed = "graphed" if cuda else "ungraphed"
        print(
            f"variant {spec:28s} {graphed} fwd+bwd {ms:7.3f} ms  (build, compile, warm-up {setup:5.1f} s)",
            flush=True,
        )
        if i == 0 and not args.no_profile:
            trace = args.trace_dir / "graphed.json" if args.trace_dir and cuda else None
            prof = profile_steps(step, args.profile_iters, cuda, trace)
            sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            print(f"-- {spec} {graphed}, {args.profile_iters} steps, by kernel/op name")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.rows), flush=True)
            if cuda:  # the same compiled code without graphs: each kernel under the op that launched it
                plain = make_step(build_encoder(vae, spec, x, graphs=False), x)
                for _ in range(3):
                    plain()
                trace = args.trace_dir / "ungraphed.json" if args.trace_dir else None
                prof = profile_steps(plain, args.profile_iters, cuda, trace)
                print(f"-- {spec} ungraphed, {args.profile_iters} steps, by op and input shape")
                table = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=args.rows)
                print(table, flush=True)
        reset_knobs(defaults)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
