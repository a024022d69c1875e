"""History screen (key `h`): the last hour as plots: throughput, generation time, scores and each
GPU's utilisation, temperature and power, from the App's `History` (console/history.py).

Plots are textual-plotext's PlotextPlot (Textualize's maintained wrapper of plotext: pure
terminal drawing, no extra dependencies beyond plotext, which it vendors). The x axis is
minutes before now; the 30 s window and the 0.6 threshold are drawn as lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from console.alerts import QUALITY_THRESHOLD, THROTTLE_WINDOW_S
from console.history import History


@dataclass(frozen=True)
class PlotSpec:
    id: str
    title: str
    series: str  # a History series name; "gpu*" plots one line per GPU
    line: float | None = None  # a reference line (limit or threshold)


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec("throughput", "throughput (generations/h, all endpoints)", "throughput"),
    PlotSpec(
        "gen_time",
        f"generation time (s, mean of endpoints; -- {THROTTLE_WINDOW_S:.0f} s)",
        "gen_time",
        THROTTLE_WINDOW_S,
    ),
    PlotSpec("score", f"scores (-- threshold {QUALITY_THRESHOLD})", "score", QUALITY_THRESHOLD),
    PlotSpec("util", "GPU utilisation (%)", "gpu*.util"),
    PlotSpec("temp", "GPU temperature (°C)", "gpu*.temp"),
    PlotSpec("power", "GPU power (W)", "gpu*.power"),
)


class HistoryScreen(Screen[None]):
    DEFAULT_CSS = """
    HistoryScreen Grid { grid-size: 2 3; grid-gutter: 0 1; }
    HistoryScreen.-wide Grid { grid-size: 3 2; }
    HistoryScreen #history-caption { height: 1; color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,h,q", "close", "Close", id="history.close")]

    def __init__(
        self, history: History, interval: Callable[[], float], clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.history = history
        self.interval = interval
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield Static("last hour · x: minutes before now · esc / h: back", id="history-caption")
        with Grid():
            for spec in PLOTS:
                yield PlotextPlot(id=f"plot-{spec.id}")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self._tick()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 150, "-wide")

    def _tick(self) -> None:
        self.set_timer(max(1.0, self.interval()), self._next)

    def _next(self) -> None:
        if self.is_attached:
            self.redraw()
            self._tick()

    def series_for(self, spec: PlotSpec) -> dict[str, list[tuple[float, float]]]:
        now = self.clock()
        if "*" not in spec.series:
            return {spec.series: self.history.points(spec.series, now)}
        head, tail = spec.series.split("*")
        names = [n for n in self.history.names() if n.startswith(head) and n.endswith(tail)]
        return {n.removesuffix(tail).upper(): self.history.points(n, now) for n in names}

    def redraw(self) -> None:
        now = self.clock()
        for spec in PLOTS:
            widget = self.query_one(f"#plot-{spec.id}", PlotextPlot)
            plt = widget.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(spec.title)
            plt.xlim(-60, 0)
            drawn = False
            for label, points in self.series_for(spec).items():
                if points:
                    xs = [(t - now) / 60.0 for t, _ in points]
                    plt.plot(xs, [v for _, v in points], label=label if "*" in spec.series else None)
                    drawn = True
            if spec.line is not None:
                plt.hline(spec.line, "red")
            if not drawn:
                plt.title(spec.title + " · no samples yet")
            widget.refresh()

    def action_close(self) -> None:
        self.dismiss(None)
