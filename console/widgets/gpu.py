"""GPU pane: three lines per GPU in nvitop's spirit (name, temperature, fan, power, SM clock;
utilisation and memory bars with history sparklines; clocks-event reasons). Each field shows
N/A on its own when NVML cannot read it."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from console.gpu import GpuSample, GpuSnapshot
from console.widgets.fmt import NA, bar, gib, num, sparkline

HOT_C = 83.0  # the seed guide's "should be <83 C" under load
BAD_REASONS = ("hw-slowdown", "hw-thermal", "sw-thermal", "hw-power-brake")


def _level(value: float | None, warn: float, crit: float) -> str:
    if value is None:
        return "dim"
    if value >= crit:
        return "bold red"
    if value >= warn:
        return "yellow"
    return "green"


def _clocks(events: list[str] | None) -> Text:
    if events is None:
        return Text(NA, style="dim")
    active = [r for r in events if r != "idle"]
    if not events:
        return Text("no throttling", style="green")
    if not active:
        return Text("idle", style="dim")
    bad = any(r in BAD_REASONS for r in active)
    return Text(", ".join(active), style="bold red" if bad else "yellow")


def render_gpu(g: GpuSample, spark_width: int = 16) -> Text:
    t = Text()
    t.append(f"GPU{g.index} ", style="bold")
    t.append(g.name or NA, style="bold cyan")
    t.append("  ")
    t.append(num(g.temp, unit="°C"), style=_level(g.temp, 75, HOT_C))
    t.append(f"  FAN {num(g.fan, unit='%')}")
    t.append(f"  PWR {num(g.power)}/{num(g.power_limit, unit='W')}")
    t.append(f"  SM {num(g.sm_clock, unit=' MHz')}")
    t.append("\n  UTL ")
    t.append(bar(g.util), style=_level(g.util, 101, 102))
    t.append(f" {num(g.util, unit='%'):>4} ")
    t.append(sparkline(g.util_history, spark_width).ljust(spark_width), style="green")
    t.append("  MEM ")
    mem_pct = g.mem_percent
    t.append(bar(mem_pct), style=_level(mem_pct, 80, 95))
    t.append(f" {num(mem_pct, unit='%'):>4} ")
    t.append(sparkline(g.mem_history, spark_width).ljust(spark_width), style="magenta")
    t.append(f" {gib(g.mem_used)}/{gib(g.mem_total)} GiB")
    t.append("\n  clocks: ")
    t.append_text(_clocks(g.clock_events))
    return t


def render_snapshot(snap: GpuSnapshot | None) -> Text:
    if snap is None:
        return Text("sampling GPUs…", style="dim")
    if snap.error:
        t = Text()
        t.append("No GPU monitoring: ", style="bold yellow")
        t.append(snap.error)
        t.append(
            "\nEverything else keeps working (endpoints can still run the CPU smoke preset).", style="dim"
        )
        return t
    out = Text()
    for i, g in enumerate(snap.gpus):
        if i:
            out.append("\n")
        out.append_text(render_gpu(g))
    return out


class GpuPane(Static):
    """Shows the latest GpuSnapshot; the App feeds it from a thread worker."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(render_snapshot(None), **kwargs)  # type: ignore[arg-type]
        self.snapshot: GpuSnapshot | None = None
        self.border_title = "GPUs"

    def show(self, snap: GpuSnapshot) -> None:
        self.snapshot = snap
        self.update(render_snapshot(snap))
        self.border_subtitle = f"driver {snap.driver}" if snap.driver else ""

    @property
    def text(self) -> str:
        return render_snapshot(self.snapshot).plain
