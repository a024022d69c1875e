"""`gen404 compress | decompress | inspect`: PLY <-> SPZ (404 variant) and a file summary.

Torch-free. Output is written only after the whole conversion succeeded, through a temporary
file and a rename, so bad input never leaves a partial or empty output behind.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.cli import CliError
from engine.commands.generate import write_atomic
from engine.formats import ply, spz
from engine.gate import check_gate
from engine.splats import Splats


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="PLY -> SPZ (the subnet's 404 variant)")
    p.add_argument("input", type=Path, help="Gaussian PLY")
    p.add_argument("-o", "--output", type=Path, help="SPZ to write (default: INPUT with .spz)")
    p.add_argument("--level", type=int, default=1, help="zstd level, 1..22 (default 1, as the miner)")
    p.set_defaults(func=run_compress)

    p = subparsers.add_parser("decompress", help="SPZ -> PLY (404 layout)")
    p.add_argument("input", type=Path, help="SPZ file")
    p.add_argument("-o", "--output", type=Path, help="PLY to write (default: INPUT with .ply)")
    p.add_argument("--normals", action="store_true", help="include zero nx ny nz (validators don't)")
    p.set_defaults(func=run_decompress)

    p = subparsers.add_parser("inspect", help="summary of a PLY or SPZ file, with the validator's gate")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_inspect)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)  # temp file + rename; the temp file is removed on failure
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def run_compress(args: argparse.Namespace) -> int:
    data = _read(args.input)
    start = time.perf_counter()
    try:
        out = spz.compress(data, compression_level=args.level)
    except spz.SpzError as exc:
        raise CliError(f"{args.input}: {exc}") from None
    elapsed = time.perf_counter() - start
    target = args.output or args.input.with_suffix(".spz")
    _write_atomic(target, out)
    print(
        f"wrote {target}: {len(out):,} bytes ({len(data) / len(out):.2f}x smaller) in {elapsed * 1e3:.0f} ms"
    )
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    data = _read(args.input)
    start = time.perf_counter()
    try:
        out = spz.decompress(data, include_normals=args.normals)
    except spz.SpzError as exc:
        raise CliError(f"{args.input}: {exc}") from None
    elapsed = time.perf_counter() - start
    target = args.output or args.input.with_suffix(".ply")
    _write_atomic(target, out)
    print(f"wrote {target}: {len(out):,} bytes in {elapsed * 1e3:.0f} ms")
    return 0


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None  # JSON has no NaN/inf


def _stats(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if not v.size:
        return {"min": None, "median": None, "max": None, "mean": None}
    return {
        k: _finite(f(v))
        for k, f in (("min", np.min), ("median", np.median), ("max", np.max), ("mean", np.mean))
    }


def summarize(data: bytes) -> dict[str, Any]:
    """What `inspect` reports; raises CliError for anything that is neither PLY nor SPZ."""
    info: dict[str, Any] = {"bytes": len(data)}
    try:
        if data.startswith(b"ply"):
            info["format"] = "ply"
            splats: Splats = ply.read_ply(data, copy=False)
        elif data.startswith(spz.ZSTD_FRAME_MAGIC):
            header, body = spz.read_payload(data)
            info.update(
                format="spz", version=header.version, antialiased=bool(header.flags & spz.FLAG_ANTIALIASED)
            )
            splats = spz.unpack(header, body)
        else:
            raise CliError("unknown format: neither a PLY ('ply' header) nor an SPZ (zstd frame)")
    except (ply.PlyError, spz.SpzError) as exc:
        raise CliError(str(exc)) from None

    with np.errstate(all="ignore"):
        pos = splats.positions
        finite = np.isfinite(pos).all(axis=1)
        lo = pos[finite].min(axis=0) if finite.any() else np.full(3, np.nan)
        hi = pos[finite].max(axis=0) if finite.any() else np.full(3, np.nan)
        alphas = splats.alphas()
        verdict = check_gate(splats)
        info.update(
            splats=len(splats),
            sh_degree=splats.sh_degree,
            bbox={"min": [_finite(v) for v in lo], "max": [_finite(v) for v in hi]},
            nonfinite_positions=int((~finite).sum()),
            opacity={**_stats(alphas), "below_1e-3": float(np.mean(alphas < 1e-3))},
            scale=_stats(splats.linear_scales().max(axis=1)),
            gate={"passed": verdict.passed, "reason": verdict.reason},
        )
    return info


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def run_inspect(args: argparse.Namespace) -> int:
    info = summarize(_read(args.file))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt = info["format"].upper()
    if info["format"] == "spz":
        fmt += f" v{info['version']}" + (", antialiased" if info["antialiased"] else "")
    op, sc, bb = info["opacity"], info["scale"], info["bbox"]
    lines = [
        f"file      {args.file} ({info['bytes']:,} bytes)",
        f"format    {fmt}",
        f"splats    {info['splats']:,}, SH degree {info['sh_degree']}",
        "bbox      " + " .. ".join("(" + ", ".join(_fmt(v) for v in bb[k]) + ")" for k in ("min", "max")),
        f"opacity   mean {_fmt(op['mean'])}, median {_fmt(op['median'])}, {op['below_1e-3']:.1%} below 1e-3",
        f"scale     largest axis: min {_fmt(sc['min'])}, median {_fmt(sc['median'])}, max {_fmt(sc['max'])}",
        f"gate      {'PASS' if info['gate']['passed'] else 'FAIL'}: {info['gate']['reason']}",
    ]
    if info["nonfinite_positions"]:
        lines.insert(4, f"warning   {info['nonfinite_positions']:,} splats with non-finite positions")
    print("\n".join(lines))
    return 0
