"""Regenerate the console's SVG screenshots (main screen and help screen):

    python scripts/screenshots.py            # writes screenshots/console-main.svg, console-help.svg

Runs the real Gen404Console under Textual's Pilot with a fixed, made-up state (two H100s, three
endpoints, a log tail), so the pictures do not depend on this machine; no endpoint is started.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from console.app import Gen404Console  # noqa: E402
from console.config import ConsoleConfig  # noqa: E402
from console.gpu import GpuSample, GpuSnapshot  # noqa: E402
from console.supervisor import EndpointView  # noqa: E402

SIZE = (180, 48)

LOG_LINES = """\
gen404 serve: http://127.0.0.1:10007 preset text_mv_fast, queue 4
2026-11-27 10:40:02,114 | INFO | uvicorn.error | Started server process [48213]
2026-11-27 10:40:11,902 | INFO | gen404.serve | preset text_mv_fast ready on cuda (ready in 9.8s)
2026-11-27 10:41:20,310 | INFO | gen404.serve | generated 'a red sports car' in 21.4s (24012 splats)
2026-11-27 10:41:44,871 | INFO | gen404.serve | generated 'a wooden rocking chair' in 22.9s (23877 splats)
2026-11-27 10:42:09,005 | INFO | gen404.serve | generated 'a ceramic teapot with blue flowers' in 23.3s (25110 splats)
2026-11-27 10:42:31,442 | INFO | gen404.serve | generated 'a knight in silver armour' in 21.9s (24460 splats)
"""


def demo_gpus() -> GpuSnapshot:
    gpus = []
    for i, (util, mem, temp, power, events) in enumerate(
        [(97.0, 52.3, 71.0, 612.0, ["sw-power-cap"]), (64.0, 31.8, 58.0, 402.0, [])]
    ):
        hist = [max(0.0, min(100.0, util - 30 + 30 * math.sin(k / 3.0 + i))) for k in range(40)]
        mem_hist = [mem - 8 + k * 0.2 for k in range(40)]
        gpus.append(
            GpuSample(
                index=i,
                name="NVIDIA H100 80GB HBM3",
                util=util,
                mem_used=int(mem / 100 * 80 * 2**30),
                mem_total=80 * 2**30,
                temp=temp,
                power=power,
                power_limit=700.0,
                sm_clock=1980 - 150 * i,
                fan=None,
                clock_events=events,
                util_history=hist,
                mem_history=mem_hist,
            )
        )
    return GpuSnapshot(gpus=gpus, driver="550.54.15")


def demo_views(log: Path) -> list[EndpointView]:
    def v(port: int, **kw: object) -> EndpointView:
        base: dict[str, object] = dict(
            name=f"gen-{port}",
            port=port,
            gpu="0",
            preset="text_mv_fast",
            status="ready",
            pid=48213,
            uptime_s=7320.0,
            restarts=0,
            queue=0,
            in_flight=0,
            done=311,
            failed=2,
            last_s=21.9,
            mean_s=22.6,
            p95_s=25.8,
            per_hour=157.3,
            message="",
            log_path=str(log),
            device="cuda",
        )
        base.update(kw)
        return EndpointView(**base)  # type: ignore[arg-type]

    return [
        v(
            10006,
            pid=48190,
            status="busy",
            in_flight=1,
            queue=1,
            done=305,
            last_s=22.4,
            mean_s=22.9,
            p95_s=26.1,
        ),
        v(10007),
        v(
            10008,
            gpu="1",
            preset="text_mv_ultra_fast",
            pid=48377,
            uptime_s=540.0,
            restarts=1,
            done=37,
            failed=0,
            last_s=12.8,
            mean_s=13.4,
            p95_s=14.9,
            per_hour=266.0,
            message="restarted after crash (1 quick)",
        ),
    ]


class StaticSampler:
    def __init__(self, snap: GpuSnapshot) -> None:
        self.snap = snap

    def sample(self) -> GpuSnapshot:
        return self.snap

    def close(self) -> None:
        pass


async def take(out: Path) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gen-10007.log"
        log.write_text(LOG_LINES)
        config = ConsoleConfig(endpoints=[], log_dir=Path(tmp))
        app = Gen404Console(
            config,
            sampler=StaticSampler(demo_gpus()),
            supervise=False,  # type: ignore[arg-type]
            state_file=Path(tmp) / "endpoints.json",
        )
        written = []
        async with app.run_test(size=SIZE) as pilot:
            app.show_endpoints(demo_views(log))
            await pilot.pause(0.5)
            await pilot.press("down")  # select gen-10007: its log shows below
            await pilot.pause(0.3)
            written.append(Path(app.save_screenshot("console-main.svg", str(out))))
            await pilot.press("question_mark")
            await pilot.pause(0.3)
            written.append(Path(app.save_screenshot("console-help.svg", str(out))))
        return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "screenshots")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(take(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
