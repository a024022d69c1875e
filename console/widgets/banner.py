"""Top lines: a status line (endpoints, refresh, clock) and a banner for warnings such as
"no CUDA: running the smoke preset, output not meaningful"."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = "StatusLine { height: 1; }"

    def show(self, endpoints: int, ready: int, refresh: float, state_dir: str) -> None:
        t = Text()
        t.append(" gen404-console ", style="bold reverse")
        t.append(f"  endpoints {ready}/{endpoints} ready")
        t.append(f"  refresh {refresh:g}s")
        t.append(f"  state {state_dir}", style="dim")
        t.append(f"  {time.strftime('%H:%M:%S')}", style="dim")
        self.update(t)


class Banner(Static):
    """Warnings; hidden (display: none) while there are none."""

    DEFAULT_CSS = "Banner { height: auto; display: none; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.messages: list[str] = []

    def set_messages(self, messages: list[str]) -> None:
        self.messages = list(messages)
        self.update(Text("\n".join(f"⚠ {m}" for m in self.messages)))
        self.display = bool(self.messages)
