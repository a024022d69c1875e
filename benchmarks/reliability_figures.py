"""Run the reliability suite and print the figures it measured (the numbers in docs/reliability.md).

    python -m benchmarks.reliability_figures              # runs tests/reliability (~2-4 min on CPU)
    python -m benchmarks.reliability_figures --from F.json  # print figures saved by an earlier run
    python -m benchmarks.reliability_figures -k faults    # a subset (pytest -k)
    python -m benchmarks.reliability_figures --save F.json  # keep the raw figures too

The tests record what they measure (latencies, counts, memory) through the `figures` fixture
(tests/reliability/conftest.py), which writes JSON when GEN404_RELIABILITY_FIGURES names a file;
this script sets it, runs pytest, and prints one table per fault or load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model, load_average

REPO_ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in load_average() or ())
    return (
        f"{os.cpu_count()} CPU cores ({cpu_model()}), load average {load}, Python {platform.python_version()}"
    )


def run_suite(extra: list[str]) -> tuple[dict[str, Any], float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "figures.json"
        env = {**os.environ, "GEN404_RELIABILITY_FIGURES": str(target)}
        cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider", *extra]
        t0 = time.monotonic()
        code = subprocess.run(cmd, cwd=REPO_ROOT, env=env).returncode
        wall = time.monotonic() - t0
        figures = json.loads(target.read_text()) if target.exists() else {}
    return figures, wall, code


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def print_tables(figures: dict[str, Any]) -> None:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in sorted(figures.items()):
        group, _, name = key.partition(".")
        groups.setdefault(group, []).append((name, value))
    for group, rows in groups.items():
        print(f"\n### {group}\n\n| figure | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {_fmt(value)} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", type=Path, help="print figures from this JSON instead of running")
    p.add_argument("-k", help="pytest -k expression (a subset of the suite)")
    p.add_argument("--save", type=Path, help="also write the measured figures to this JSON file")
    args = p.parse_args()
    print(f"machine: {machine()}")
    if args.source:
        print_tables(json.loads(args.source.read_text()))
        return 0
    figures, wall, code = run_suite(["-k", args.k] if args.k else [])
    print(f"suite: {wall:.1f} s wall, pytest exit {code}")
    if args.save:
        args.save.write_text(json.dumps(figures, indent=1, sort_keys=True))
    print_tables(figures)
    return code


if __name__ == "__main__":
    sys.exit(main())
