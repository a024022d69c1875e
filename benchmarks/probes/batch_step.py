"""The batched SDS step, one job loop against one batched launch, side by side (issue 15's probe).

For each job count, in one process on the same loaded models, each mode runs the same jobs:
  loop      a rasterisation and an Adam step per job (the batched step before session 7)
  batched   one padded rasterisation for all jobs and one fused Adam launch per lr
Per mode and count it prints the step time as served (no syncs: the GPU may run behind the CPU),
the host CPU time a step costs, the GPU's kernel time a step (torch.profiler, with --gpu-busy)
and the synchronised per-stage split. The modes alternate in rounds so drift hits both alike.

    python -m benchmarks.probes.batch_step --preset text_mv_fast --random-weights \
        [--jobs 1,4,8] [--compile on|off|aot] [--steps 40] [--rounds 2] [--gpu-busy] [--json OUT]
CPU dev box (checks the script; tiny models): --preset smoke --jobs 1,2 --steps 3 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

PROMPTS = ["a red sports car", "a wooden chair", "a ceramic teapot", "a small robot"]
MODES = {"loop": (False, False), "batched": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="text_mv_fast")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--jobs", default="1,4,8")
    ap.add_argument("--compile", choices=("preset", "on", "off", "aot"), default="off")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per mode and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--gpu-busy", action="store_true", help="also the GPU kernel time a step (torch.profiler)"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from engine.batch_pipeline import BatchEngine
    from engine.pipeline import Generator
    from engine.presets import load_preset

    counts = [int(c) for c in args.jobs.split(",")]
    preset = load_preset(args.preset)
    # every step an engine runs, plus a margin: no job finishes inside the window (and the view
    # plan, built on the host for every step at add(), stays short)
    steps = 3 + args.rounds * args.steps + (10 if args.gpu_busy else 0) + max(args.steps // 3, 1) + 10
    changes: dict[str, Any] = {
        "max_batch": max(counts),
        "iters": steps,
        "density_start_iter": steps + 1,  # no densification: every step the same shapes
        "density_end_iter": steps + 1,
    }
    if args.compile != "preset":
        changes["compile"] = args.compile != "off"
    if args.compile in ("on", "aot"):
        changes["compile_backend"] = "aot" if args.compile == "aot" else "jit"
    preset = dataclasses.replace(preset, **changes)
    device = args.device or preset.device
    generator = Generator(preset, device=device, random_weights=args.random_weights, sync_timings=False)
    generator.load()
    cuda = generator.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    results: dict[str, Any] = {
        "preset": args.preset,
        "compile": args.compile,
        "device": _device_name(torch, cuda),
    }
    print(
        f"batch step probe: {results['device']}, preset {args.preset}, compile {args.compile}{_t()}",
        flush=True,
    )
    for jobs in counts:
        engines = {}
        for mode, (render, merge) in MODES.items():
            engine = BatchEngine(generator, max_batch=max(counts))
            engine.batch_render, engine.merge_optimizers = render, merge
            for k in range(jobs):
                engine.add(PROMPTS[k % len(PROMPTS)], seed=k)
            started = time.perf_counter()
            for _ in range(3):  # this bucket's capture / compile, then warm
                engine.step()
            sync()
            print(
                f"  {jobs} job(s) {mode}: first 3 steps {time.perf_counter() - started:.1f} s{_t()}",
                flush=True,
            )
            engines[mode] = engine
        walls: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpus: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, engine in engines.items():
                sync()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    engine.step()
                sync()
                walls[mode].append((time.perf_counter() - wall) / args.steps * 1e3)
                cpus[mode].append((time.process_time() - cpu) / args.steps * 1e3)
        row: dict[str, Any] = {}
        for mode, engine in engines.items():
            entry: dict[str, Any] = {
                "step_ms": round(statistics.median(walls[mode]), 3),
                "step_ms_rounds": [round(w, 3) for w in walls[mode]],
                "host_cpu_ms": round(statistics.median(cpus[mode]), 3),
            }
            if args.gpu_busy and cuda:
                entry["gpu_kernel_ms"] = _kernel_ms(torch, engine, 10)
            entry["stages_ms"] = _stages(engine, generator, sync, max(args.steps // 3, 1))
            row[mode] = entry
            print(f"  {jobs} job(s) {mode}: {json.dumps(entry)}{_t()}", flush=True)
        loop, batched = row["loop"]["step_ms"], row["batched"]["step_ms"]
        row["batched_vs_loop"] = round(batched / loop, 3) if loop else None
        print(f"  {jobs} job(s): batched / loop step time = {row['batched_vs_loop']}", flush=True)
        results[str(jobs)] = row
        for engine in engines.values():
            engine.jobs.clear()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


T0 = time.perf_counter()


def _t() -> str:
    return f" [t={time.perf_counter() - T0:.0f}s]"


def _stages(engine: Any, generator: Any, sync: Any, steps: int) -> dict[str, float]:
    """Synchronised stage times (ms a step): what each stage costs once the GPU has caught up."""
    generator.sync_timings = True
    totals: dict[str, float] = {}
    try:
        for _ in range(steps):
            engine.step()
            for stage, seconds in engine.step_timings.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
    finally:
        generator.sync_timings = False
        sync()
    return {k: round(v / steps * 1e3, 3) for k, v in totals.items() if v}


def _kernel_ms(torch: Any, engine: Any, steps: int) -> float:
    """GPU kernel time a step, summed over kernels (single stream: the GPU's busy time)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    busy_us = sum(e.self_device_time_total for e in prof.key_averages())
    return round(busy_us / steps / 1e3, 3)


def _device_name(torch: Any, cuda: bool) -> str:
    if cuda:
        return str(torch.cuda.get_device_name(0))
    from benchmarks.machine import cpu_model

    return f"CPU ({cpu_model()})"


if __name__ == "__main__":
    main()
