"""`gen404 generate "PROMPT" --preset NAME -o out.ply`: one generation from the command line.

Everything the user can get wrong (prompt, preset, output path, device) is checked before any
model loads; the PLY is written through a temporary file and a rename, so a failure never leaves
a partial file. Progress goes to stderr, the timing table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from engine.cli import CliError
from engine.presets import PresetError, load_preset
from engine.prompts import validate_prompt

DEFAULT_PRESET = "text_mv_fast"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="text -> 3D Gaussian splat PLY (404 layout)")
    p.add_argument("prompt", help="what to generate, e.g. 'a red sports car'")
    p.add_argument(
        "--preset", default=DEFAULT_PRESET, help=f"preset name (default {DEFAULT_PRESET}; CPU: smoke)"
    )
    p.add_argument("-o", "--output", type=Path, default=Path("output.ply"), help="PLY to write")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument("--random-weights", action="store_true", help="full-size models with random weights")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: the preset's (auto: cuda if present)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="keep the preset's torch.compile on (off by default here: compiling took 15-195 s on H200s, "
        "repaid only over many generations, as on an endpoint)",
    )
    p.set_defaults(func=run)


def check_writable(path: Path) -> None:
    """Raise CliError unless a file can be created at `path` (probed with a real temp file)."""
    if path.is_dir():
        raise CliError(f"output {path} is a directory")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CliError(f"cannot write {path}: directory {directory} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise CliError(f"cannot write {path}: permission denied")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def write_atomic(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProgressBar:
    """A one-line bar on a terminal; on a pipe, a line every 10% (logs stay readable)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self._last_decile = -1

    def __call__(self, step: int, total: int) -> None:
        fraction = step / max(total, 1)
        elapsed = time.perf_counter() - self.start
        filled = int(self.width * fraction)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{total} steps {elapsed:.1f}s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if step >= total else ""))
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(line + "\n")
        self.stream.flush()


def format_timings(timings: dict[str, float], load_s: float, total_s: float) -> str:
    rows = [("load models", load_s), *timings.items(), ("generation total", total_s)]
    lines = [f"{'stage':<18}{'seconds':>9}{'share':>8}"]
    for name, seconds in rows:
        share = f"{100 * seconds / total_s:7.1f}%" if total_s > 0 and name in timings else ""
        lines.append(f"{name:<18}{seconds:>9.3f}{share:>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # validate everything before loading any model
    try:
        prompt = validate_prompt(args.prompt)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        preset = load_preset(args.preset)
    except PresetError as exc:
        raise CliError(str(exc)) from None
    if preset.compile and not args.compile:
        preset = dataclasses.replace(preset, compile=False)
    if args.seed is not None and args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    check_writable(args.output)

    import torch  # (engine/__init__ has already set OMP_WAIT_POLICY for it)

    from engine.formats.ply import write_ply
    from engine.gate import check_gate
    from engine.models import MissingWeightsError
    from engine.pipeline import Generator

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available")
    generator = Generator(preset, device=args.device, random_weights=args.random_weights)
    print(f"preset {preset.name} on {generator.device}: {preset.description}", file=sys.stderr)
    started = time.perf_counter()
    try:
        generator.load()
    except MissingWeightsError as exc:  # one line naming the model and the pull command
        raise CliError(str(exc)) from None
    load_s = time.perf_counter() - started

    result = generator.generate(prompt, seed=args.seed, on_step=ProgressBar(sys.stderr))
    data = write_ply(result.splats)
    write_atomic(args.output, data)

    print(format_timings(result.timings, load_s, result.total_s))
    if generator.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(generator.device)
        print(f"peak GPU memory   {peak / 2**30:9.2f} GiB")
    for note in result.notes:
        print(f"note: {note}")
    verdict = check_gate(result.splats)
    print(
        f"wrote {args.output}: {len(result.splats)} Gaussians, {len(data) / 1024:.0f} KiB, "
        f"seed {result.seed}, gate {'ok' if verdict.passed else 'FAIL: ' + verdict.reason}"
    )
    return 0
