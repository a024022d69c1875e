"""Does an endpoint forked from the fork server compile from inductor's caches like a plain start?

Runs what an endpoint's start runs for a preset (`Generator.load`, then the compiled warm-up) in
this process (`plain`) or in a child forked after the fork server's imports (`fork`, as
engine/service/zygote.py forks endpoints), and prints what torch.compile did
(engine/compile_stats.py) and the cache metadata of the VAE encoder's first parameters. Run
`plain` first (it fills the caches), then `fork`, with the same TORCHINDUCTOR_CACHE_DIR:

    export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
    python -m benchmarks.probes.fork_compile plain text_mv_fast
    python -m benchmarks.probes.fork_compile fork text_mv_fast

Random weights (full-size architectures for the text_mv presets). With
`TORCH_LOGS=+torch._inductor.codecache,+torch._functorch._aot_autograd.autograd_cache` each
process also logs its cache keys' components, which benchmarks/probes/cache_keydiff.py compares.
H200, session 8: the forked child hit every entry (docs/benchmarks.md, life cycle).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("plain", "fork"))
    p.add_argument("preset", nargs="?", default="text_mv_fast")
    return p.parse_args(argv)


def fork_after_preload() -> bool:
    """In the parent: the fork server's imports, then a fork; True in the child (which goes on),
    the parent exits with the child's status."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as the fork server does
    from engine.service.zygote import preload

    preload()
    pid = os.fork()
    if pid == 0:
        return True
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "fork":
        fork_after_preload()
    import torch
    from torch._subclasses.fake_tensor import extract_tensor_metadata

    from engine import compile_stats
    from engine.pipeline import Generator
    from engine.presets import load_preset

    preset = dataclasses.replace(load_preset(args.preset), compile=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = Generator(preset, device, random_weights=True)
    generator.load()
    before = compile_stats.snapshot()
    generator.warmup(force=True)
    stats = compile_stats.since(before)
    print(f"{args.mode} {args.preset} on {device}: {compile_stats.describe(stats)}", flush=True)
    if generator.compile_failure:
        print(f"  torch.compile failed: {generator.compile_failure}", flush=True)
    vae = getattr(generator.guidance, "vae", None)
    for name, param in list(vae.named_parameters())[:3] if vae is not None else []:
        print(f"  {name}: {extract_tensor_metadata(param)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
