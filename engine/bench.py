"""`gen404 bench` logic: end-to-end generations per preset, optimised and (optionally) baseline.

One run = a request's work: `Generator.generate` (prompt in) + `write_ply` (PLY bytes out); the
SPZ encoding (`splats_to_spz`) is timed beside it. Timed runs are unsynchronised (the headline);
the per-stage breakdown needs device syncs, so it comes from one extra run with
`sync_timings` and `time_substages` on (the pipeline's stage-timing hook, which also times the
guidance's VAE encode and UNet, synced).

The baseline is the straightforward loop the pipeline started as: fp32 guidance, no CUDA
graphs, no fused Adam, a device sync at every stage edge. It runs in the same process, on the
same GPU, so each speed-up is a ratio of numbers measured side by side.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.generator import GenerationResult, GeneratorProtocol
from engine.presets import Preset, PresetError, load_preset, with_overrides

BASELINE_OVERRIDES: dict[str, object] = {
    "dtype": "fp32",
    "cuda_graphs": False,
    "fused_optimizer": False,
    "channels_last": False,
    "compile": False,
}
UNCOMPILED_NOTE = "measured uncompiled"  # a compile variant whose torch.compile failed at warm-up
# a new prompt per run (see _prompt): prompt encoding is part of every real request
PROMPTS = (
    "a red sports car",
    "a wooden chair with a green cushion",
    "a blue ceramic teapot",
    "a small brass lantern",
    "a cartoon penguin wearing a scarf",
    "a stack of old leather books",
    "a potted cactus in a clay pot",
    "a vintage film camera",
)
STAGE_ORDER = (
    "init",
    "prompt",
    "render",
    "vae_encode",
    "unet",
    "guidance_other",
    "backward",
    "optimizer",
    "densify",
    "export",
    "ply",
    "spz",
)


@dataclass
class RunRecord:
    seconds: float  # generate + write_ply, unsynchronised: the headline
    generate_s: float
    ply_s: float
    spz_s: float
    splats: int
    prompt: str


@dataclass
class BenchResult:
    label: str
    preset: str
    variant: str  # "optimised" | "baseline"
    device: str
    load_s: float = 0.0
    warmup_s: float = 0.0
    runs: list[RunRecord] = field(default_factory=list)
    median_s: float | None = None
    min_s: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # seconds, from the synced run
    peak_gpu_gib: float | None = None
    splats: int | None = None
    ply_bytes: int | None = None
    spz_bytes: int | None = None
    gate: str | None = None  # "ok" or the gate's reason
    ply_valid: bool | None = None
    notes: list[str] = field(default_factory=list)
    profile: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _prompt(label: str, variant: str, index: int) -> str:
    """Unique across the whole bench, so the guidance's prompt cache never serves a run."""
    return f"{PROMPTS[index % len(PROMPTS)]}, {variant} {label} #{index}"


def parse_spec(spec: str, global_overrides: dict[str, object] | None = None) -> tuple[str, Preset]:
    """ "name[+key=value...]" -> (label, preset with the overrides), validated as preset files are."""
    name, *pairs = spec.split("+")
    overrides = dict(global_overrides or {})
    for pair in pairs:
        overrides.update(parse_override(pair))
    preset = load_preset(name.strip())
    if overrides:
        preset = with_overrides(preset, overrides, source=f"bench spec {spec!r}")
    return spec, preset


def parse_override(text: str) -> dict[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PresetError(f"override {text!r}: expected KEY=VALUE")
    return {key.strip(): yaml.safe_load(raw)}


def baseline_of(preset: Preset) -> Preset:
    return with_overrides(preset, BASELINE_OVERRIDES, source="baseline")


def _cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def _sync(device: Any) -> None:
    if _cuda(device):
        import torch

        torch.cuda.synchronize(device)


def _one_run(generator: GeneratorProtocol, prompt: str) -> tuple[RunRecord, GenerationResult, bytes, bytes]:
    from engine.formats.ply import write_ply
    from engine.formats.spz import splats_to_spz

    started = time.perf_counter()
    result = generator.generate(prompt)
    generated = time.perf_counter()
    ply = write_ply(result.splats)
    done = time.perf_counter()
    spz = splats_to_spz(result.splats)
    spz_done = time.perf_counter()
    record = RunRecord(
        seconds=done - started,
        generate_s=generated - started,
        ply_s=done - generated,
        spz_s=spz_done - done,
        splats=len(result.splats),
        prompt=prompt,
    )
    return record, result, ply, spz


def _profiled_stages(generator: GeneratorProtocol, prompt: str) -> dict[str, float]:
    """One run with synced stage edges; guidance split into VAE encode, UNet and the rest."""
    previous = generator.sync_timings, generator.time_substages
    generator.sync_timings = generator.time_substages = True
    try:
        record, result, _ply, _spz = _one_run(generator, prompt)
    finally:
        generator.sync_timings, generator.time_substages = previous
    stages = dict(result.timings)
    guidance_s = stages.pop("guidance", 0.0)
    stages["vae_encode"] = result.substages.get("vae_encode", 0.0)
    stages["unet"] = result.substages.get("unet", 0.0)
    stages["guidance_other"] = max(guidance_s - stages["vae_encode"] - stages["unet"], 0.0)
    stages["ply"] = record.ply_s
    stages["spz"] = record.spz_s
    stages["total"] = record.seconds
    return {k: stages[k] for k in (*STAGE_ORDER, "total") if k in stages}


PROFILE_STEPS = 100  # a profile's trace grows with every kernel: the first steps tell the costs


def _torch_profile(
    generator: GeneratorProtocol, prompt: str, out_dir: Path, label: str, top: int = 25
) -> list[dict[str, Any]]:
    """One generation (its first PROFILE_STEPS steps, same shapes) under torch.profiler: top ops
    by device and by CPU time to a text file."""
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if _cuda(generator.device):
        activities.append(ProfilerActivity.CUDA)
    preset = generator.preset
    generator.preset = dataclasses.replace(preset, iters=min(preset.iters, PROFILE_STEPS))
    try:
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            generator.generate(prompt)
            _sync(generator.device)
            wall = time.perf_counter() - started
    finally:
        generator.preset = preset
    events = prof.key_averages()

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    rows = sorted(events, key=device_us, reverse=True)
    # kernel rows only: an op's self device time repeats the kernels it launched
    kernels = [e for e in events if "CUDA" in str(getattr(e, "device_type", ""))]
    busy_us = sum(device_us(e) for e in kernels)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = min(preset.iters, PROFILE_STEPS)
    text = [f"{label}: {steps} steps profiled, wall {wall:.3f} s, device kernel time {busy_us / 1e6:.3f} s"]
    for sort in ("self_device_time_total", "self_cuda_time_total", "self_cpu_time_total"):
        with contextlib.suppress(Exception):
            text.append(f"\n== sorted by {sort} ==\n" + events.table(sort_by=sort, row_limit=top))
    (out_dir / f"profile_{safe}.txt").write_text("\n".join(text))
    with contextlib.suppress(Exception):
        torch.cuda.synchronize()
    summary = [
        {"op": "(profiled steps)", "value": steps},
        {"op": "(profiled wall s)", "value": round(wall, 4)},
    ]
    summary.append({"op": "(device kernel time s)", "value": round(busy_us / 1e6, 4)})
    for e in rows[:top]:
        summary.append(
            {
                "op": e.key,
                "device_ms": round(device_us(e) / 1e3, 3),
                "cpu_ms": round(float(e.self_cpu_time_total) / 1e3, 3),
                "count": int(e.count),
            }
        )
    return summary


def bench_one(
    generator: GeneratorProtocol,
    label: str,
    preset: Preset,
    variant: str,
    runs: int,
    profile_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
    stages: bool = True,
) -> BenchResult:
    """Switch `generator` to `preset`, warm it up, time `runs` generations, then (with `stages`)
    one synced run for the per-stage breakdown and (with `profile_dir`) one profiled run."""
    from engine.formats.ply import read_ply
    from engine.gate import check_gate

    res = BenchResult(label=label, preset=preset.name, variant=variant, device=str(generator.device))
    baseline = variant == "baseline"
    generator.sync_timings = baseline  # the original loop synced at every stage edge
    started = time.perf_counter()
    if generator.loaded:
        generator.set_preset(preset)
    else:
        generator.preset = preset
        generator.load()
    res.load_s = time.perf_counter() - started
    res.warmup_s = generator.warmup()
    log(f"{label} [{variant}]: load {res.load_s:.1f}s, warm-up {res.warmup_s:.1f}s")
    cuda = _cuda(generator.device)
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(generator.device)
    last = None
    for i in range(runs):
        record, result, ply, spz = _one_run(generator, _prompt(label, variant, i))
        res.runs.append(record)
        last = (result, ply, spz)
        log(f"{label} [{variant}] run {i + 1}/{runs}: {record.seconds:.3f}s ({record.splats} splats)")
    if baseline and last is not None:
        # the baseline's runs are synced already: its breakdown is the last run's own
        result, _ply, _spz = last
        res.stages = {**result.timings, "ply": res.runs[-1].ply_s, "spz": res.runs[-1].spz_s}
        res.stages["total"] = res.runs[-1].seconds
    elif stages:
        res.stages = _profiled_stages(generator, _prompt(label, variant, runs))
    if cuda:
        import torch

        res.peak_gpu_gib = torch.cuda.max_memory_allocated(generator.device) / 2**30
    if last is not None:
        result, ply, spz = last
        res.splats = len(result.splats)
        res.ply_bytes, res.spz_bytes = len(ply), len(spz)
        verdict = check_gate(result.splats)
        res.gate = "ok" if verdict.passed else str(verdict.reason)
        res.ply_valid = len(read_ply(ply)) == len(result.splats)
        res.notes = list(result.notes)
        if preset.compile and generator.compile_failure:
            res.notes.append(f"{UNCOMPILED_NOTE}: torch.compile failed ({generator.compile_failure})")
        seconds = [r.seconds for r in res.runs]
        res.median_s, res.min_s = statistics.median(seconds), min(seconds)
    if profile_dir is not None and not baseline:
        res.profile = _torch_profile(generator, _prompt(label, variant, runs + 1), profile_dir, label)
    return res


def run_bench(
    specs: list[str],
    runs: int = 3,
    baseline: list[str] | None = None,
    baseline_runs: int = 1,
    device: str | None = None,
    random_weights: bool = False,
    overrides: dict[str, object] | None = None,
    profile_dir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    stages: bool = True,
) -> dict[str, Any]:
    """Bench every spec, then the baseline of those in `baseline`; one Generator per model set.

    `checkpoint` gets the report so far after each preset (a run cut short keeps its numbers).
    """
    import torch

    from engine.pipeline import Generator

    parsed = [parse_spec(spec, overrides) for spec in specs]  # all errors before any model loads
    generators: dict[tuple[object, ...], Generator] = {}

    def generator_for(preset: Preset) -> Generator:
        probe = Generator(preset, device=device, random_weights=random_weights, sync_timings=False)
        key = probe.models_key()
        if key not in generators:
            generators.clear()  # one model set at a time: the GPU never holds two
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            generators[key] = probe
        return generators[key]

    results: list[BenchResult] = []
    jobs = [(label, p, "optimised", runs) for label, p in parsed]
    jobs += [
        (label, baseline_of(p), "baseline", baseline_runs) for label, p in parsed if label in (baseline or [])
    ]
    for label, preset, variant, n in jobs:
        try:
            results.append(
                bench_one(generator_for(preset), label, preset, variant, n, profile_dir, log, stages)
            )
        except Exception as exc:  # report it and go on with the other presets
            import traceback

            log(traceback.format_exc())
            results.append(
                BenchResult(label, preset.name, variant, str(device), error=f"{type(exc).__name__}: {exc}")
            )
        if checkpoint is not None:
            checkpoint(_report(parsed, results, random_weights))
    return _report(parsed, results, random_weights)


def _report(
    parsed: list[tuple[str, Preset]], results: list[BenchResult], random_weights: bool
) -> dict[str, Any]:
    import torch

    speedups = {}
    for label, _p in parsed:
        opt = next((r for r in results if r.label == label and r.variant == "optimised"), None)
        base = next((r for r in results if r.label == label and r.variant == "baseline"), None)
        if opt and base and opt.median_s and base.median_s:
            speedups[label] = base.median_s / opt.median_s
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "random_weights": random_weights,
        "results": [asdict(r) for r in results],
        "speedups": speedups,
    }


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables: headline per preset/variant, then the synced per-stage breakdown (ms)."""
    lines = [f"GPU: {report.get('gpu') or 'none (CPU)'}; torch {report.get('torch')}", ""]
    lines.append(
        "| preset | variant | runs | e2e median s | min s | SPZ s | warm-up s | splats | peak GiB | gate | speed-up |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        if r["error"]:
            lines.append(f"| {r['label']} | {r['variant']} | error: {r['error'][:80]} |||||||||")
            continue
        spz = statistics.median(x["spz_s"] for x in r["runs"]) if r["runs"] else 0.0
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        speed = report["speedups"].get(r["label"]) if r["variant"] == "optimised" else None
        lines.append(
            f"| {r['label']} | {r['variant']} | {len(r['runs'])} | {r['median_s']:.3f} | {r['min_s']:.3f} "
            f"| {spz:.3f} | {r['warmup_s']:.1f} | {r['splats']} | {peak} | {r['gate']} "
            f"| {f'{speed:.2f}x' if speed else '-'} |"
        )
    stage_rows = [r for r in report["results"] if r["stages"]]
    if stage_rows:
        names = [s for s in (*STAGE_ORDER, "guidance", "total") if any(s in r["stages"] for r in stage_rows)]
        lines += ["", "Per-stage ms (one run with device syncs at stage edges):", ""]
        lines.append("| preset | variant | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for r in stage_rows:
            cells = [f"{r['stages'][s] * 1e3:.0f}" if s in r["stages"] else "-" for s in names]
            lines.append(f"| {r['label']} | {r['variant']} | " + " | ".join(cells) + " |")
    for r in report["results"]:
        for note in r["notes"]:
            if note.startswith(UNCOMPILED_NOTE):
                lines += ["", f"Note: {r['label']} [{r['variant']}] {note}"]
    return "\n".join(lines)
