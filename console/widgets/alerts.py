"""Alerts strip: one line under the banner listing the current alerts (console/alerts.py), each
with its source; hidden while there are none. The full list is the tooltip."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from console.alerts import Alert


class AlertsStrip(Static):
    DEFAULT_CSS = """
    AlertsStrip { height: 1; display: none; background: $error 25%; padding: 0 1; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.alerts: list[Alert] = []

    @property
    def lines(self) -> list[str]:
        return [a.line() for a in self.alerts]

    def show(self, alerts: Sequence[Alert]) -> None:
        if list(alerts) == self.alerts:
            return
        self.alerts = list(alerts)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"▲ {len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''}: ", style="bold")
        for i, a in enumerate(self.alerts):
            if i:
                text.append(" · ", style="dim")
            text.append(f"{a.source} ", style="bold red" if a.severity == "error" else "bold yellow")
            text.append(a.text)
        self.update(text, layout=False)  # always one line
        self.tooltip = "\n".join(self.lines) or None
        self.display = bool(self.alerts)
