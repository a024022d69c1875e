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


def _meter(t: Text, label: str, percent: float | None, history: list[float], spark: int, style: str) -> None:
    t.append(f"{label} ")
    t.append(bar(percent, 8), style=_level(percent, 80, 95) if label == "MEM" else "green")
    t.append(f" {num(percent, unit='%'):>4} ")
    if spark:
        t.append(sparkline(history, spark).ljust(spark), style=style)


def render_gpu(g: GpuSample, width: int = 100) -> Text:
    """Three lines when `width` allows utilisation and memory side by side, else four."""
    t = Text()
    t.append(f"GPU{g.index} ", style="bold")
    t.append(g.name or NA, style="bold cyan")
    t.append("  ")
    t.append(num(g.temp, unit="°C"), style=_level(g.temp, 75, HOT_C))
    t.append(f"  FAN {num(g.fan, unit='%')}")
    t.append(f"  PWR {num(g.power)}/{num(g.power_limit, unit='W')}")
    t.append(f"  SM {num(g.sm_clock, unit=' MHz')}")
    mem = f" {gib(g.mem_used)}/{gib(g.mem_total)} GiB"
    fixed = 2 * (2 + 4 + 8 + 6) + 2 + len(mem)  # both meters without sparklines, on one line
    spark = min(24, (width - fixed) // 2)
    if spark >= 6:
        t.append("\n  ")
        _meter(t, "UTL", g.util, g.util_history, spark, "green")
        t.append("  ")
        _meter(t, "MEM", g.mem_percent, g.mem_history, spark, "magenta")
        t.append(mem)
    else:
        spark = max(0, min(24, width - 2 - 4 - 8 - 6 - len(mem)))
        t.append("\n  ")
        _meter(t, "UTL", g.util, g.util_history, spark, "green")
        t.append("\n  ")
        _meter(t, "MEM", g.mem_percent, g.mem_history, spark, "magenta")
        t.append(mem)
    t.append("\n  clocks: ")
    t.append_text(_clocks(g.clock_events))
    return t


def render_snapshot(snap: GpuSnapshot | None, width: int = 100) -> Text:
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
        out.append_text(render_gpu(g, width))
    return out


def render_boxes(local: GpuSnapshot | None, remote: list[tuple[str, GpuSnapshot]], width: int = 100) -> Text:
    """This machine's GPUs, then each remote box's (from its endpoint's GET /gpu) under its host."""
    out = render_snapshot(local, width)
    for host, snap in remote:
        out.append(f"\n── box {host} ──\n", style="bold")
        if snap.error:
            out.append(f"No GPU monitoring there: {snap.error}", style="yellow")
        else:
            out.append_text(render_snapshot(snap, width))
    return out


class GpuPane(Static):
    """Shows the latest GpuSnapshot, and remote boxes' (console/remote.py); the App feeds it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(render_snapshot(None), **kwargs)  # type: ignore[arg-type]
        self.snapshot: GpuSnapshot | None = None
        self.remote: list[tuple[str, GpuSnapshot]] = []
        self.border_title = "GPUs"

    _shown: Text | None = None

    def show(self, snap: GpuSnapshot) -> None:
        self.snapshot = snap
        self._draw()
        subtitle = f"driver {snap.driver}" if snap.driver else ""
        if subtitle != self.border_subtitle:  # setting it repaints, even to the same text
            self.border_subtitle = subtitle

    def show_remote(self, boxes: list[tuple[str, GpuSnapshot]]) -> None:
        """Keep the boxes' snapshots; the next local sample (every refresh interval) draws them,
        so remote rounds add no redraws of their own. Drawn now only before the first sample."""
        self.remote = list(boxes)
        if self.snapshot is None:
            self._draw()

    def _draw(self) -> None:
        """Redraw only what changed, and lay the screen out again only when the height did
        (each layout pass is most of the console's CPU at 1 Hz)."""
        text = render_boxes(self.snapshot, self.remote, self.content_size.width or 100)
        if text == self._shown:
            return
        lines = None if self._shown is None else self._shown.plain.count("\n")
        self._shown = text
        self.update(text, layout=lines != text.plain.count("\n"))

    def on_resize(self) -> None:
        if self.snapshot is not None or self.remote:
            self._draw()

    @property
    def text(self) -> str:
        return render_boxes(self.snapshot, self.remote, self.content_size.width or 100).plain
