"""`gen404 bench`: end-to-end generation speed per preset, optionally against the eager baseline.

    gen404 bench [--presets text_mv_fast,text_mv_ultra_fast] [--runs N] [--baseline[=PRESETS]]
                 [--json FILE] [--random-weights] [--device cpu|cuda] [--profile DIR]
                 [--set KEY=VALUE ...]

A preset entry may carry overrides: `text_mv_fast+channels_last=true` (same validation as a
preset file). Progress goes to stderr; the tables (markdown) to stdout. Logic: engine/bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.cli import CliError

DEFAULT_PRESETS = "text_mv_fast"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time full generations per preset (and vs the eager baseline)")
    p.add_argument(
        "--presets",
        default=DEFAULT_PRESETS,
        help=f"comma-separated preset names, each optionally NAME+key=value (default {DEFAULT_PRESETS}; CPU: smoke)",
    )
    p.add_argument("--runs", type=int, default=3, help="timed generations per preset (default 3)")
    p.add_argument(
        "--baseline",
        nargs="?",
        const="*",
        metavar="PRESETS",
        help="also run the eager fp32 loop (no graphs, no fused Adam, synced stages) in this process;"
        " for every preset, or only the comma-separated entries given (--baseline=text_mv_fast)",
    )
    p.add_argument("--baseline-runs", type=int, default=1, help="timed baseline generations (default 1)")
    p.add_argument("--json", type=Path, help="write the full results here")
    p.add_argument("--random-weights", action="store_true", help="full-size models with random weights")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: the preset's (auto: cuda if present)")
    p.add_argument(
        "--profile", type=Path, metavar="DIR", help="one torch.profiler run per preset, tables to DIR"
    )
    p.add_argument(
        "--no-stages",
        action="store_true",
        help="skip the extra synced run that gives the per-stage breakdown (one generation less per preset)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset key for every preset",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.bench import format_report, parse_override, parse_spec, run_bench
    from engine.presets import PresetError

    if args.runs < 1 or args.baseline_runs < 1:
        raise CliError("--runs and --baseline-runs must be at least 1")
    specs = [s.strip() for s in args.presets.split(",") if s.strip()]
    if not specs:
        raise CliError("--presets is empty")
    try:
        overrides: dict[str, object] = {}
        for item in args.set:
            overrides.update(parse_override(item))
        for spec in specs:
            parse_spec(spec, overrides)  # every name and override checked before loading models
    except PresetError as exc:
        raise CliError(str(exc)) from None
    if args.profile is not None and args.profile.exists() and not args.profile.is_dir():
        raise CliError(f"--profile {args.profile}: not a directory")
    if args.json is not None and not args.json.parent.is_dir():
        raise CliError(f"cannot write {args.json}: directory {args.json.parent} does not exist")

    baseline: list[str] | None = None
    if args.baseline == "*":
        baseline = specs
    elif args.baseline:
        baseline = [s.strip() for s in args.baseline.split(",") if s.strip()]
        unknown = [s for s in baseline if s not in specs]
        if unknown:
            raise CliError(f"--baseline names {', '.join(unknown)}, not in --presets")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_bench(
        specs,
        runs=args.runs,
        baseline=baseline or [],
        baseline_runs=args.baseline_runs,
        device=args.device,
        random_weights=args.random_weights,
        overrides=overrides,
        profile_dir=args.profile,
        stages=not args.no_stages,
        log=log,
        checkpoint=None
        if args.json is None
        else lambda partial: args.json.write_text(json.dumps(partial, indent=1)),
    )
    print(format_report(report))
    failed = [r for r in report["results"] if r["error"]]
    return 1 if failed else 0
