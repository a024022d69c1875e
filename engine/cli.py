"""`gen404` command line: one thin dispatcher; each subcommand lives in its own module.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets
`func=run` with `run(args) -> int`. Modules import torch lazily inside `run`, so
`gen404 --help` and the torch-free commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine import startup

# subcommand module names, in help order
COMMAND_MODULES = [
    "engine.commands.generate",  # generate
    "engine.commands.serve",  # serve
    "engine.commands.formats",  # compress, decompress, inspect
    "engine.commands.score",  # score, validator
    "engine.commands.models",  # models list | pull
    "engine.commands.bench",  # bench
]

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gen404", description="gen404: fast text-to-3D for 404-GEN miners")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # subcommand not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    startup.prepare()  # before anything imports torch (engine/startup.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"gen404 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the imported module so `CliError` raised by subcommands is this same class.
    from engine.cli import main as _main

    sys.exit(_main())
