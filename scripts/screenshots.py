"""Regenerate the console's SVG screenshots from the snapshot tests' demo state:

    python scripts/screenshots.py            # writes screenshots/console-*.svg

The pictures are the same screens the snapshot tests check (tests/console/test_console_snapshots.py,
fixed demo state in tests/support/console_demo.py: two H100s, three endpoints, a log tail and a
rehearsal on a stopped clock), so they do not depend on this machine; no endpoint is started.
Written: console-main.svg (180x48, as before), console-help.svg, and the main screen at the three
sizes the layout is tested at: console-80x24.svg, console-120x40.svg, console-200x60.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.console_demo import demo_console, show_demo, use_utc  # noqa: E402


async def press(pilot: Any, *keys: str) -> None:
    await pilot.press(*keys)
    await pilot.pause(0.3)


SHOTS: tuple[tuple[str, tuple[int, int], tuple[str, ...]], ...] = (
    ("console-main.svg", (180, 48), ()),
    ("console-help.svg", (180, 48), ("question_mark",)),
    ("console-80x24.svg", (80, 24), ()),
    ("console-120x40.svg", (120, 40), ()),
    ("console-200x60.svg", (200, 60), ()),
)


async def take(out: Path) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, keys in SHOTS:
            app = demo_console(Path(tmp) / "logs")
            async with app.run_test(size=size) as pilot:
                await show_demo(pilot)
                if keys:
                    await press(pilot, *keys)
                written.append(Path(app.save_screenshot(name, str(out))))
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "screenshots")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)  # the demo's log path is relative to the repository
    undo = use_utc()
    try:
        for path in asyncio.run(take(args.out.resolve())):
            print(path)
    finally:
        undo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
