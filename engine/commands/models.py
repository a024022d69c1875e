"""`gen404 models list | pull`: what guidance weights are on this machine, and fetching them.

Torch-free: listing only looks at the filesystem and the Hugging Face cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from engine.cli import CliError
from engine.presets import parse_compile_part


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="guidance weights: list what is present, pull what a preset needs"
    )
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = sub.add_parser("list", help="weights present locally (sizes) and which presets can run")
    ls.set_defaults(func=run_list)
    pull = sub.add_parser("pull", help="download the weights a preset needs into the Hugging Face cache")
    pull.add_argument("--preset", default="text_mv", help="preset whose weights to fetch (default text_mv)")
    pull.add_argument(
        "--score",
        action="store_true",
        help="fetch the validator's scoring models instead (CLIP, DINOv2 quality, LPIPS AlexNet)",
    )
    pull.add_argument("--clip", action="store_true", help="fetch only the CLIP weights scoring uses")
    pull.set_defaults(func=run_pull)
    warm = sub.add_parser(
        "warm",
        help="compile a preset ahead of time: what an endpoint's warm-up builds, saved to the warm cache",
    )
    warm.add_argument(
        "--preset", action="append", help="preset to warm (repeatable; default: every preset that compiles)"
    )
    warm.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    warm.add_argument("--random-weights", action="store_true", help="full-size random weights (benchmarks)")
    warm.add_argument(
        "--part",
        type=_compile_part,
        help="compile only this model (unet, vae; unet:K/N or vae:K/N: the K-th of N shards of its"
        " blocks, compile_regions presets), into inductor's disk cache or its AOT packages (no"
        " warm-cache file): what an endpoint's compile helpers run beside a cold start"
        " (engine/service/compile_helpers.py)",
    )
    warm.add_argument(
        "--regions",
        action="store_true",
        help="compile block by block (compile_regions), whatever the preset says: what a cold"
        " start's helpers build first, to serve on while the whole-model packages compile",
    )
    warm.set_defaults(func=run_warm)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _compile_part(text: str) -> str:
    try:
        parse_compile_part(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _presets() -> dict[str, Any]:
    from engine.presets import PresetError, list_presets, load_preset

    found: dict[str, Any] = {}
    for name in list_presets():
        try:
            found[name] = load_preset(name)
        except PresetError as exc:
            found[name] = exc
    return found


def run_list(args: argparse.Namespace) -> int:
    from engine.guidance_spec import preset_value
    from engine.models import known_sources, locate, models_dir, pull_command, requirements, size_on_disk

    presets = _presets()
    sources = {(s.label, s.components): s for s in known_sources()}
    for preset in presets.values():
        if not isinstance(preset, Exception):
            for source in requirements(preset):
                sources.setdefault((source.label, source.components), source)
    root = models_dir()
    hf_home = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    print(f"weights (GEN404_MODELS_DIR={root or 'unset'}, HF cache {hf_home}):")
    for source in sources.values():
        path = locate(source)
        state = f"present  {_gb(size_on_disk(path, source.components)):>9}  {path}" if path else "missing"
        parts = f" [{', '.join(source.components)}]" if source.components else ""
        print(f"  {source.role:<20} {source.label}{parts}: {state}")
    print("presets:")
    for name, preset in presets.items():
        if isinstance(preset, Exception):
            print(f"  {name:<20} invalid: {preset}")
            continue
        needed = requirements(preset)
        missing = [s for s in needed if locate(s) is None]
        if not needed:
            kind = "tiny" if preset_value(preset, "guidance") == "tiny_mvdream" else "full-size"
            print(f"  {name:<20} ready ({kind} random weights)")
        elif missing:
            labels = ", ".join(s.label for s in missing)
            print(f"  {name:<20} missing {labels}: run `{pull_command(name)}`")
        else:
            print(f"  {name:<20} ready")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from engine.models import locate, pull, requirements
    from engine.presets import PresetError, load_preset

    if getattr(args, "score", False):  # every scoring model (engine/scoring/weights.py)
        from engine.scoring.weights import pull_score_weights

        try:
            for key, path in pull_score_weights().items():
                print(f"{key}: ready at {path}")
        except Exception as exc:
            raise CliError(str(exc).strip().splitlines()[0][:300]) from None
        return 0
    if getattr(args, "clip", False):  # scoring's CLIP (engine/scoring/weights.py)
        from engine.scoring.weights import pull_clip

        try:
            print(f"CLIP weights ready at {pull_clip()}")
        except Exception as exc:
            raise CliError(str(exc).strip().splitlines()[0][:300]) from None
        return 0
    try:
        preset = load_preset(args.preset)
    except PresetError as exc:
        raise CliError(str(exc)) from None
    needed = requirements(preset)
    if not needed:
        print(f"preset {args.preset} uses random weights: nothing to download")
        return 0
    for source in needed:
        if (present := locate(source)) is not None:
            print(f"{source.label}: already present at {present}")
            continue
        print(f"{source.label}: downloading ({source.role})", flush=True)
        try:
            path = pull(source)
        except Exception as exc:  # offline, unknown repo, gated, disk full: one line, no traceback
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CliError(f"cannot download {source.label}: {type(exc).__name__}: {reason[:200]}") from None
        print(f"{source.label}: ready at {path}")
    return 0


def run_warm(args: argparse.Namespace) -> int:
    """Build each preset as `gen404 serve` would (weights, cache, warm-up) and save its warm
    cache, printing the phases; a later `serve` of the preset loads instead of compiling."""
    presets = _presets()
    names = args.preset or [n for n, p in presets.items() if not isinstance(p, Exception) and p.compile]
    for name in names:
        preset = presets.get(name)
        if preset is None:
            raise CliError(f"unknown preset {name!r} (available: {', '.join(presets)})")
        if isinstance(preset, Exception):
            raise CliError(str(preset))
    if not names:
        print("no preset compiles: nothing to warm")
        return 0
    from engine.service.runtime import default_factory
    from engine.service.switch import PhaseClock, build_ready, describe_failure, missing_weights

    part = args.part
    if part is not None:
        if len(names) != 1:
            raise CliError("--part compiles one preset: name it with --preset")
        from engine.service.compile_helpers import exit_with_parent

        exit_with_parent()  # a helper's endpoint may die (SIGKILL) before it ends
    device = None if args.device == "auto" else args.device
    failed = 0
    for name in names:
        preset = presets[name]
        if args.regions:
            preset = dataclasses.replace(preset, compile_regions=True)
        missing = missing_weights(preset, args.random_weights)
        if missing:
            print(f"{name}: skipped: {missing}")
            failed += 1
            continue

        def make(progress: Any, preset: Any = preset) -> Any:
            generator = default_factory(preset, device, args.random_weights)
            if part is not None:
                generator.compile_parts = (part,)
            generator.load(progress)
            return generator

        def progress(_fraction: float, message: str = "", name: str = name) -> None:
            if message:
                print(f"{name}: {message}", flush=True)

        clock = PhaseClock()
        try:
            # a part alone is not a preset's warm cache: only inductor's caches (jit) or the
            # part's AOT package get it
            built = build_ready(preset, device, make, clock, progress, use_cache=part is None)
        except Exception as exc:
            print(f"{name}: failed: {describe_failure(exc)}")
            failed += 1
            continue
        failure = getattr(built.generator, "compile_failure", None)
        if part is not None and failure:
            print(f"{name}: failed: torch.compile of the {part}: {failure}")
            failed += 1
            continue
        phases = ", ".join(f"{phase} {s:.1f}s" for phase, s in clock.snapshot()["phases"].items())
        cache = built.cache
        outcome = "no compiled artefacts (the preset does not compile)"
        if cache is not None:
            outcome = f"cache {cache.state}, {cache.saved or 'kept'} -> {cache.path}"
        elif preset.compile_backend == "aot":
            reports = getattr(built.generator.guidance, "aot_reports", lambda: None)() or []
            states = ", ".join(f"{r['name']} {r['state']}" for r in reports) or "none"
            what = f"{part} into its AOT package" if part is not None else "AOT packages"
            outcome = f"{what} ({states})"
        elif part is not None:
            from engine import compile_stats

            outcome = f"{part} into inductor's caches: {compile_stats.describe(built.compile)}"
        print(f"{name}: warm in {built.seconds:.1f}s ({phases}); {outcome}", flush=True)
    if part is not None:
        # a compile helper: its endpoint waits for this exit, and tearing torch down takes
        # seconds (CPU dev box: 1.5-2.1 s) that nothing needs; everything is written and flushed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if failed else 0)
    return 1 if failed else 0
