"""Plain formatting helpers shared by the panes and `--once` (no Textual imports)."""

from __future__ import annotations

SPARK = "▁▂▃▄▅▆▇█"
NA = "N/A"


def sparkline(values: list[float], width: int = 20, lo: float = 0.0, hi: float = 100.0) -> str:
    """The last `width` values as block characters scaled to lo..hi (btop/nvitop style)."""
    tail = values[-width:]
    if not tail:
        return ""
    span = (hi - lo) or 1.0
    out = []
    for v in tail:
        frac = min(1.0, max(0.0, (v - lo) / span))
        out.append(SPARK[min(len(SPARK) - 1, int(frac * (len(SPARK) - 1) + 0.5))])
    return "".join(out)


def bar(percent: float | None, width: int = 10) -> str:
    if percent is None:
        return "·" * width
    filled = min(width, max(0, round(percent / 100.0 * width)))
    return "█" * filled + "░" * (width - filled)


def gib(n: int | None) -> str:
    return NA if n is None else f"{n / 2**30:.1f}"


def num(value: float | int | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    return NA if value is None else fmt.format(value) + unit


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    if value < 100:
        return f"{value:.1f}s"
    return f"{value:.0f}s"


def uptime(value: float | None) -> str:
    """pm2's style: 42s, 7m, 3h, 2D."""
    if value is None:
        return "-"
    v = int(value)
    if v < 60:
        return f"{v}s"
    if v < 3600:
        return f"{v // 60}m"
    if v < 86400:
        return f"{v // 3600}h"
    return f"{v // 86400}D"


def count(value: int | float | None) -> str:
    return "-" if value is None else str(value)


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
