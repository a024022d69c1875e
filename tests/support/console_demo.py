"""A fixed, made-up console state for snapshot tests and the README screenshots.

Two H100s (GPU0 hot, so the alerts strip shows), three endpoints, a log tail and a rehearsal
with six validators after a few results, all on a fixed clock: nothing here depends on this
machine, the time of day, pids, ports in use or timings, so the same state draws the same
screen on every run. No endpoint is started and no network is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import console.app
from console.app import Gen404Console
from console.config import ConsoleConfig
from console.gpu import GpuSample, GpuSnapshot, ProcessUsage
from console.mining.clock import ManualClock
from console.mining.controller import MiningController
from console.mining.events import AveragesReported, FeedbackReceived, MiningEvent, TaskReceived
from console.mining.options import MiningOptions
from console.supervisor import EndpointView
from console.widgets.mining import MiningPanes, endpoints_from_ports

DEMO_NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
# relative to the repository root: the log pane's title shows it, so it must not depend on the checkout
LOG_PATH = "tests/data/console_demo/gen-10007.log"
STATE_FILE = Path("/tmp/gen404-demo/state/endpoints.json")  # shown in the status line; never written
CONFIG_FILE = Path("/home/miner/.config/gen404/console.yaml")  # shown in the help; never read


def demo_gpus() -> GpuSnapshot:
    gpus = []
    specs = [
        (97.0, 52.3, 84.0, 612.0, ["sw-power-cap"], {48190: (21 * 2**30, 61.0), 48213: (20 * 2**30, 36.0)}),
        (64.0, 31.8, 58.0, 402.0, [], {48377: (25 * 2**30, 64.0)}),
    ]
    for i, (util, mem, temp, power, events, procs) in enumerate(specs):
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
                processes={pid: ProcessUsage(m, sm) for pid, (m, sm) in procs.items()},
            )
        )
    return GpuSnapshot(gpus=gpus, driver="550.54.15", taken_at=DEMO_NOW)


def demo_views(log: str = LOG_PATH) -> list[EndpointView]:
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
            max_batch=1,
            done=311,
            failed=2,
            last_s=21.9,
            mean_s=22.6,
            p95_s=25.8,
            per_hour=157.3,
            message="",
            log_path=log,
            device="cuda",
        )
        base.update(kw)
        return EndpointView(**base)  # type: ignore[arg-type]

    return [
        v(
            10006,
            pid=48190,
            status="busy",
            in_flight=4,  # a batching endpoint (max_batch 4) with every slot taken
            max_batch=4,
            queue=1,
            done=305,
            last_s=22.4,
            mean_s=22.9,
            p95_s=26.1,
        ),
        v(10007, image_prompts=3),
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


PROMPTS = (
    "a red sports car",
    "a wooden rocking chair",
    "a ceramic teapot with blue flowers",
    "a knight in silver armour",
    "an old brass telescope on a tripod",
    "a bowl of ramen with chopsticks",
)
# (uid, seconds before DEMO_NOW the feedback came, score, endpoint port, preset, generation s)
RESULTS = (
    (12, 250, 0.71, 10006, "text_mv_fast", 22.4),
    (27, 200, 0.66, 10007, "text_mv_fast", 21.9),
    (49, 150, 0.52, 10008, "text_mv_ultra_fast", 12.8),
    (81, 95, 0.74, 10006, "text_mv_fast", 22.9),
    (133, 40, 0.63, 10007, "text_mv_fast", 23.3),
)


def demo_events() -> list[MiningEvent]:
    events: list[MiningEvent] = []
    for i, (uid, ago, score, port, preset, gen) in enumerate(RESULTS):
        t = DEMO_NOW - ago
        endpoint = f"http://127.0.0.1:{port}"
        events.append(TaskReceived(t - gen - 1, uid, PROMPTS[i], endpoint=endpoint))
        events.append(
            FeedbackReceived(
                t,
                uid,
                PROMPTS[i],
                score,
                cooldown_until=t + 300 - 30 + (600 if score < 0.6 else 0),
                endpoint=endpoint,
                preset=preset,
                gen_time_s=gen,
            )
        )
        events.append(
            AveragesReported(t, average=score, accepted=1 if score >= 0.6 else 0, reward=0.0, uid=uid)
        )
    events.append(TaskReceived(DEMO_NOW - 8, 0, PROMPTS[5], endpoint="http://127.0.0.1:10006"))
    return events


class DemoController(MiningController):
    """A rehearsal controller whose state is the demo's events on a stopped clock; runs nothing."""

    def __init__(self) -> None:
        super().__init__(MiningOptions(rehearsal=True), clock=ManualClock(DEMO_NOW))
        self.state.scorer_label = "local validation service"
        for event in demo_events():
            self.state.apply(event)

    async def run(self) -> None:
        return None


class DemoConsole(Gen404Console):
    """The real console with the demo's mining controller in its mining pane."""

    CSS_PATH = str(Path(console.app.__file__).with_name("app.tcss"))  # relative paths follow the subclass

    def mount_mining_panes(self) -> None:
        box = self.query_one("#mining")
        self.query_one("#cooldowns-placeholder").remove()
        self.query_one("#scores-placeholder").remove()
        reward = self.query_one("#reward-summary")
        ports = endpoints_from_ports(lambda: [10006, 10007, 10008])
        self.mining = MiningPanes(self, box, self.config.mining, ports, reward, controller=DemoController())  # type: ignore[arg-type]
        self.mining.mount(before=reward)


class StaticSampler:
    def __init__(self, snap: GpuSnapshot) -> None:
        self.snap = snap

    def sample(self) -> GpuSnapshot:
        return self.snap

    def close(self) -> None:
        pass


def demo_console(log_dir: Path) -> DemoConsole:
    config = ConsoleConfig(endpoints=[], log_dir=log_dir, mining=MiningOptions(rehearsal=True))
    config.refresh = 60.0  # nothing should redraw between the demo's set-up and the screenshot
    config.config_path = CONFIG_FILE  # the help screen names it
    return DemoConsole(
        config,
        sampler=StaticSampler(demo_gpus()),  # type: ignore[arg-type]
        supervise=False,
        state_file=STATE_FILE,
        gpu_count=lambda: (2, None),
        have_weights=lambda: True,
        clock=lambda: DEMO_NOW,
    )


def use_utc() -> Callable[[], None]:
    """Scores show local times: pin the zone to UTC for the run; returns the undo."""
    import os

    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()

    def undo() -> None:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()

    return undo


async def show_demo(pilot: object) -> None:
    """run_before for snapshots: draw the demo endpoints and select gen-10007 (its log shows)."""
    app = pilot.app  # type: ignore[attr-defined]
    app.show_endpoints(demo_views())
    await pilot.pause(0.3)  # type: ignore[attr-defined]
    app.query_one("#endpoints").select_port(10007)
    app.mining.refresh()
    await pilot.pause(0.2)  # type: ignore[attr-defined]
