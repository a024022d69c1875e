"""Top lines: a status line (endpoints, refresh, view, clock) and a one-line banner for warnings
such as "no CUDA: running the smoke preset, output not meaningful".

Both stay one line at any width: the status line drops its least useful parts first (state
dir, then the clock), the banner cuts its text with "…" and keeps the full text as a tooltip."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = "StatusLine { height: 1; }"

    _last: tuple[int, int, float, str, float | None, str, str] | None = None
    _shown: Text | None = None

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last)  # refit the parts to the new width

    def show(
        self,
        endpoints: int,
        ready: int,
        refresh: float,
        state_dir: str,
        now: float | None = None,
        view: str = "",
        gpus: str = "",
    ) -> None:
        self._last = (endpoints, ready, refresh, state_dir, now, view, gpus)
        width = self.size.width or 200
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" gen404-console ", style="bold reverse")
        t.append(f"  endpoints {ready}/{endpoints} ready")
        if view:
            t.append(f"  view {view} (v)", style="bold")
        t.append(f"  refresh {refresh:g}s")
        if gpus:  # "no GPU: why", or just "no GPU" when the reason does not fit
            short = gpus.split(":")[0]
            t.append(f"  {gpus if len(t.plain) + 2 + len(gpus) <= width else short}", style="yellow")
        # minutes, not seconds: a clock that ticks every second repaints every second, which
        # was a third of the console's CPU at 1 Hz (benchmarks/bench_console.py)
        clock = f"  {time.strftime('%H:%M', time.localtime(now if now is not None else time.time()))}"
        state = f"  state {state_dir}"
        if len(t.plain) + len(clock) <= width:
            t.append(clock, style="dim")
        if len(t.plain) + len(state) <= width:
            t.append(state, style="dim")
        if t != self._shown:  # one line whatever it says: no layout pass (it costs the console's CPU)
            self._shown = t
            self.update(t, layout=False)


class Banner(Static):
    """Warnings on one line; hidden (display: none) while there are none."""

    DEFAULT_CSS = "Banner { height: 1; display: none; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.messages: list[str] = []

    def set_messages(self, messages: list[str]) -> None:
        self.messages = list(messages)
        text = Text(no_wrap=True, overflow="ellipsis")
        if len(self.messages) > 1:
            text.append(f"⚠ {len(self.messages)}: ", style="bold")
        else:
            text.append("⚠ ", style="bold")
        text.append(" · ".join(self.messages))
        self.update(text)
        self.tooltip = "\n".join(self.messages) or None
        self.display = bool(self.messages)
