"""`gen404 score` (score one result as a validator would) and `gen404 validator` (the local
validation service). Torch and the models load inside `run_*` only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli import CliError
from engine.scoring.weights import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_QUALITY_MODEL,
    TINY_QUALITY_MODEL,
)

DEFAULT_VALIDATOR_PORT = 8094


def _scorer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=518, help="render size in pixels (default 518, as validators)")
    p.add_argument("--views", type=int, default=16, help="number of orbit views (default 16, as validators)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"open_clip model (default {DEFAULT_MODEL})")
    p.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        help=f"open_clip pretrained tag or checkpoint path (default {DEFAULT_PRETRAINED}); local only",
    )
    p.add_argument(
        "--quality-model",
        choices=(DEFAULT_QUALITY_MODEL, TINY_QUALITY_MODEL),
        help=f"quality model (default {DEFAULT_QUALITY_MODEL}; {TINY_QUALITY_MODEL} with --model gen404-tiny)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded untrained weights for every model (tests, benchmarks)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    p.add_argument(
        "--backend", choices=("auto", "torch", "gsplat"), default="auto", help="rasterizer (default auto)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="score a PLY/SPZ result as a 404 validator would (JSON)")
    p.add_argument("result", type=Path, help="result file: .ply or .spz")
    p.add_argument("--prompt", required=True, help="the prompt the result was generated for")
    p.add_argument("--save-views", type=Path, metavar="DIR", help="also write the rendered views as PNGs")
    _scorer_options(p)
    p.set_defaults(func=run_score)

    v = subparsers.add_parser("validator", help="run the local validation service (subnet API)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=DEFAULT_VALIDATOR_PORT, help="TCP port (default 8094)")
    v.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit in MiB (default 64)")
    v.add_argument("--api-key", help="require Authorization: Bearer KEY (or env GEN404_API_KEY)")
    v.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without an API key")
    v.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    _scorer_options(v)
    v.set_defaults(func=run_validator)


def _check_sizes(args: argparse.Namespace) -> None:
    if not 16 <= args.size <= 4096:
        raise CliError(f"--size must be between 16 and 4096 pixels, got {args.size}")
    if not 1 <= args.views <= 64:
        raise CliError(f"--views must be between 1 and 64, got {args.views}")


def build_scorer(args: argparse.Namespace):  # -> engine.scoring.scorer.Scorer
    """A loaded Scorer from the shared options; missing weights become a one-line CliError."""
    from engine.scoring.scorer import load_scorer
    from engine.scoring.weights import WeightsMissing

    try:
        return load_scorer(
            model=args.model,
            pretrained=args.pretrained,
            size=args.size,
            views=args.views,
            device=args.device,
            random_weights=args.random_weights,
            backend=args.backend,
            quality_model=args.quality_model,
        )
    except (WeightsMissing, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None


def run_score(args: argparse.Namespace) -> int:
    _check_sizes(args)
    try:
        data = args.result.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.result}: {exc.strerror or exc}") from None
    from engine.prompts import validate_prompt
    from engine.scoring.scorer import ResultDecodeError

    try:
        prompt = validate_prompt(args.prompt)
    except ValueError as exc:
        raise CliError(f"--prompt: {exc}") from None
    compression = 2 if args.result.suffix.lower() == ".spz" else None  # None: sniff
    scorer = build_scorer(args)
    try:
        report = scorer.score(data, prompt, compression, keep_images=args.save_views is not None)
    except (ResultDecodeError, ValueError) as exc:
        raise CliError(f"{args.result}: {exc}") from None
    if args.save_views is not None and report.images is not None:
        _save_views(report.images, args.save_views)
    out = report.to_dict()
    out["load_s"] = scorer.load_s
    print(json.dumps(out, indent=2))
    print(report.summary(), file=sys.stderr)
    return 0


def _save_views(images: Any, folder: Path) -> None:
    """uint8 (C, H, W, 3) renders -> folder/view_00.png ... (view order = azimuth order)."""
    from PIL import Image

    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images.numpy()):
            Image.fromarray(img).save(folder / f"view_{i:02d}.png")
    except OSError as exc:
        raise CliError(f"cannot write views to {folder}: {exc.strerror or exc}") from None


def run_validator(args: argparse.Namespace) -> int:
    _check_sizes(args)
    import logging

    from engine.commands.serve import LOG_FORMAT
    from engine.service.security import BindRefused, check_bind, resolve_api_key

    api_key = resolve_api_key(args.api_key)
    try:
        check_bind(args.host, api_key, args.insecure)
    except BindRefused as exc:
        raise CliError(str(exc)) from None
    if args.max_body_mb <= 0:
        raise CliError("--max-body-mb must be positive")
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)  # as `gen404 serve` logs
    scorer = build_scorer(args)  # load before binding: a missing model fails fast, one line

    import uvicorn

    from engine.service.validator import create_app

    app = create_app(scorer, body_limit=int(args.max_body_mb * 1024 * 1024), api_key=api_key)
    print(
        f"gen404 validator: http://{args.host}:{args.port} model {args.model} "
        f"({'random weights' if args.random_weights else args.pretrained}), {args.views} views at {args.size} px",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, log_level=args.log_level)
    except SystemExit as exc:  # uvicorn exits 1 when the port is taken; it logged why
        if exc.code:
            raise CliError(f"cannot serve on {args.host}:{args.port}") from None
    return 0
