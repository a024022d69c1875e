"""Cooldown windows pane: one row per validator (uid, state, countdown bar, last score, violations, tasks)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.mining.state import MiningState, ValidatorView

STATE_STYLE = {"ready": "bold green", "busy": "bold cyan", "cooldown": "yellow", "penalised": "bold red"}
BAR_WIDTH = 12


def countdown(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


def cooldown_bar(fraction_left: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, round(fraction_left * width)))
    return "█" * filled + "░" * (width - filled)


def score_text(v: ValidatorView, threshold: float) -> Text:
    if v.last_outcome in ("empty", "validation_failed"):
        return Text(v.last_outcome.replace("_", " "), style="dim")
    if v.last_score is None:
        return Text("gate ok" if v.last_outcome == "accepted" else "-", style="dim")
    return Text(f"{v.last_score:.2f}", style="green" if v.last_score >= threshold else "red")


def cooldown_rows(state: MiningState, now: float) -> list[dict[str, str]]:
    """Plain rows (also what tests read)."""
    rows = []
    for v in sorted(state.validators.values(), key=lambda x: x.uid):
        status = v.status(now)
        left = v.remaining(now) if status in ("cooldown", "penalised") else 0.0
        rows.append(
            {
                "uid": str(v.uid),
                "state": status,
                "countdown": ("≈" if v.estimated and left else "") + (countdown(left) if left else "-"),
                "bar": cooldown_bar(v.fraction_left(now)) if left else "",
                "score": score_text(v, v.rules.quality_threshold).plain,
                "violations": str(v.violations),
                "tasks": str(v.tasks_done),
                "cooldown": f"{v.rules.task_cooldown:g}s",
            }
        )
    return rows


class CooldownsPane(Static):
    """Call `show(state, now)` on every refresh tick."""

    DEFAULT_CSS = "CooldownsPane { height: auto; }"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[dict[str, str]] = []

    def show(self, state: MiningState, now: float) -> None:
        self.rows = cooldown_rows(state, now)
        table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        for name, justify in (
            ("UID", "right"),
            ("cd", "right"),
            ("state", "left"),
            ("window", "right"),
            ("", "left"),
            ("last", "right"),
            ("viol", "right"),
            ("tasks", "right"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        views = sorted(state.validators.values(), key=lambda x: x.uid)
        for row, v in zip(self.rows, views, strict=True):
            style = STATE_STYLE.get(row["state"], "")
            table.add_row(
                row["uid"],
                row["cooldown"],
                Text(row["state"], style=style),
                row["countdown"],
                Text(row["bar"], style=style),
                score_text(v, v.rules.quality_threshold),
                row["violations"],
                row["tasks"],
            )
        self.update(table)
