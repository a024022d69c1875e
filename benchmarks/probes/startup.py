"""Where an endpoint's start goes, step by step, in one process (issue 16's probe).

One run = one fresh process doing what `gen404 serve` does before "ready", each step timed
alone (nothing overlapped): imports, CUDA init, building the weights, loading a warm cache
(optional), the warm-up (compile + graph capture), saving the cache (optional). With
`--compile-times` it prints dynamo's per-phase compile times after the warm-up.

    python -m benchmarks.probes.startup --preset text_mv_fast --random-weights \
        [--load CACHE] [--save CACHE] [--compile on|off] [--json OUT.json] [--profile 30]
        [--cudnn-benchmark on|off] [--generations N]

The driver script (benchmarks/gpu_startup.sh) runs it cold, then warm from the saved cache with
inductor's own caches emptied, with and without TORCH_CACHING_PRECOMPILE, on one GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

T0 = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="text_mv_fast")
    parser.add_argument("--device", default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--load", type=Path, help="mega-cache payload to load before the warm-up")
    parser.add_argument("--save", type=Path, help="write the mega-cache payload here after it")
    parser.add_argument(
        "--compile",
        choices=("preset", "on", "off", "aot"),
        default="preset",
        help="on: torch.compile; aot: AOTInductor packages (built, or loaded when present)",
    )
    parser.add_argument(
        "--cuda-graphs", choices=("preset", "on", "off"), default="preset", help="the preset's cuda_graphs"
    )
    parser.add_argument(
        "--cudnn-benchmark",
        choices=("preset", "on", "off"),
        default="preset",
        help="the preset's cudnn_benchmark",
    )
    parser.add_argument(
        "--generations", type=int, default=2, help="generations after the warm-up (at least 2)"
    )
    parser.add_argument("--compile-times", action="store_true")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile weights to warm-up; print the top N functions",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import faulthandler
    import logging

    faulthandler.enable()  # a crash in native code (a compiled package) still prints where

    # the engine's compile and AOT messages, with a traceback when a compile fails
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("gen404.pipeline").setLevel(logging.DEBUG)
    logging.getLogger("engine.guidance.aot").setLevel(logging.INFO)

    steps: dict[str, float] = {}
    mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 3)
        mark = now
        print(f"  {name:<24} {steps[name]:7.2f} s", flush=True)

    steps["python start to main"] = round(mark - T0, 3)
    from engine import bytecode_cache, startup

    startup.prepare()  # as `gen404 serve` does first
    print(f"  bytecode cache: {bytecode_cache.state()}", flush=True)
    import torch

    step("import torch")
    import diffusers  # noqa: F401

    import engine.guidance.mvdream  # noqa: F401  (what an endpoint's builder imports; no transformers)

    step("import diffusers+guidance")
    from engine.pipeline import Generator
    from engine.presets import load_preset

    step("import engine")
    if torch.cuda.is_available():
        torch.cuda.init()
        torch.empty(1, device="cuda")
    step("cuda init")
    preset = load_preset(args.preset)
    if args.compile == "aot":
        preset = dataclasses.replace(preset, compile=True, compile_backend="aot")
    elif args.compile != "preset":
        preset = dataclasses.replace(preset, compile=args.compile == "on", compile_backend="jit")
    if args.cuda_graphs != "preset":
        preset = dataclasses.replace(preset, cuda_graphs=args.cuda_graphs == "on")
    if args.cudnn_benchmark != "preset":
        preset = dataclasses.replace(preset, cudnn_benchmark=args.cudnn_benchmark == "on")
    import cProfile

    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    generator = Generator(preset, device=args.device, random_weights=args.random_weights, sync_timings=False)
    generator.load()
    if generator.device.type == "cuda":
        torch.cuda.synchronize()
    step("build weights")
    info: dict[str, Any] = {
        "preset": preset.name,
        "compile": preset.compile,
        "compile_backend": preset.compile_backend,
        "cuda_graphs": preset.cuda_graphs,
        "cudnn_benchmark": preset.cudnn_benchmark,
        "precompile_env": os.environ.get("TORCH_CACHING_PRECOMPILE", "0"),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    dynamo_config = torch._dynamo.config
    info["caching_precompile"] = getattr(dynamo_config, "caching_precompile", None)
    if args.load is not None:
        loaded = torch.compiler.load_cache_artifacts(args.load.read_bytes())
        info["loaded"] = None if loaded is None else repr(loaded)[:400]
        step("load mega-cache")
    generator.warmup(force=True)
    step("warm-up (compile+capture)")
    if profile is not None:
        import pstats

        profile.disable()
        for order in ("cumulative", "tottime"):
            pstats.Stats(profile).sort_stats(order).print_stats(args.profile)

    def timed(prompt: str, seed: int) -> tuple[float, Any]:
        started = time.perf_counter()
        result = generator.generate(prompt, seed=seed)
        return round(time.perf_counter() - started, 3), result

    info["first_generation_s"], result = timed("a red wooden chair", 1)
    info["steps_run"] = result.steps
    step("first generation")
    info["second_generation_s"], _ = timed("a blue ceramic teapot", 2)
    step("second generation")
    later = [timed("a small green cactus in a pot", n)[0] for n in range(3, args.generations + 1)]
    if later:
        info["later_generations_s"] = later
        print(
            f"  generations 3-{args.generations}: median {statistics.median(later):.3f} s {later}", flush=True
        )
    # what /health shows: each AOT package set loaded, built or rebuilt, and its seconds
    reports = getattr(generator.guidance, "aot_reports", lambda: None)()
    if reports:
        info["aot"] = reports
        print(json.dumps(info["aot"]), flush=True)
    if args.save is not None:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts:
            args.save.write_bytes(bytes(artifacts[0]))
            info["saved_bytes"] = len(artifacts[0])
            info["saved_info"] = repr(artifacts[1])[:600]
        step("save mega-cache")
    if args.compile_times:
        from torch._dynamo.utils import compile_times, counters

        info["compile_times"] = compile_times(repr="str", aggregate=True)
        print(info["compile_times"], flush=True)
        # cache hits, misses and bypasses (aot_autograd, inductor) and graph breaks
        info["counters"] = {
            k: dict(v) for k, v in counters.items() if k in ("aot_autograd", "inductor", "graph_break")
        }
        print(json.dumps(info["counters"])[:3000], flush=True)
    info["steps"] = steps
    info["compile_failure"] = generator.compile_failure
    print(json.dumps({k: v for k, v in info.items() if k != "compile_times"}), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
