"""Cooldown windows pane: one row per validator (uid, its task cooldown, state, countdown bar, last
score, violations, tasks, and the validator's own duel rating and accepted results in its 4-hour
window). A countdown marked ≈ is estimated from the rules (live logs carry no cooldown_until);
lines the log cannot tie to one validator are never shown here (see the once/JSON output)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.mining.state import FAILED_SKIP_S, MiningState, ValidatorView
from console.widgets.columns import Column, fit_columns, natural_widths

STATE_STYLE = {
    "ready": "bold green",
    "busy": "bold cyan",
    "cooldown": "yellow",
    "penalised": "bold red",
    "skipped": "magenta",  # the miner's own 300 s skip after a failed pull or submit
}
OUTCOME_TEXT = {  # results with no quality score to show
    "empty": "empty",
    "validation_failed": "validation failed",
    "submit_failed": "lost (submit)",
    "validation_locked": "locked (0.0)",
    "resubmitted_too_quickly": "too soon (0.0)",
    "wrong_task": "wrong task",
}
BAR_WIDTH = 12
# (column, justify); priorities drop the least needed first on a narrow pane (columns.py)
COLUMNS: tuple[tuple[Column, str], ...] = (
    (Column("uid", "UID", 0), "right"),
    (Column("cooldown", "cd", 5), "right"),
    (Column("state", "state", 0), "left"),
    (Column("countdown", "window", 0), "right"),
    (Column("bar", "", 3), "left"),
    (Column("score", "last", 1), "right"),
    (Column("violations", "viol", 6), "right"),
    (Column("tasks", "tasks", 4), "right"),
    (Column("rating", "rating", 2), "right"),
    (Column("accepted", "acc 4h", 2), "right"),
)


def countdown(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


def cooldown_bar(fraction_left: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, round(fraction_left * width)))
    return "█" * filled + "░" * (width - filled)


def score_text(v: ValidatorView, threshold: float) -> Text:
    if v.last_outcome in OUTCOME_TEXT:
        return Text(OUTCOME_TEXT[v.last_outcome], style="dim")
    if v.last_outcome == "zero":  # live 0.0: rejected, empty or a guard; the log does not say
        return Text("0.00 ?", style="red")
    if v.last_score is None:
        return Text("gate ok" if v.last_outcome == "accepted" else "-", style="dim")
    return Text(f"{v.last_score:.2f}", style="green" if v.last_score >= threshold else "red")


def cooldown_rows(state: MiningState, now: float) -> list[dict[str, str]]:
    """Plain rows (also what tests read)."""
    rows = []
    for v in sorted(state.validators.values(), key=lambda x: x.uid):
        status = v.status(now)
        left = v.remaining(now) if status in ("cooldown", "penalised", "skipped") else 0.0
        fraction = min(1.0, left / FAILED_SKIP_S) if status == "skipped" else v.fraction_left(now)
        rows.append(
            {
                "uid": str(v.uid),
                "state": status,
                "countdown": ("≈" if v.estimated and left else "") + (countdown(left) if left else "-"),
                "bar": cooldown_bar(fraction) if left else "",
                "score": score_text(v, v.rules.quality_threshold).plain,
                "violations": str(v.violations),
                "tasks": str(v.tasks_done),
                "cooldown": f"{v.rules.task_cooldown:g}s",
                # this validator's own view: duel rating and accepted in its window (Average-score line)
                "rating": "-"
                if v.reported is None or v.reported.rating is None
                else f"{v.reported.rating:.0f}",
                "accepted": "-" if v.reported is None else str(v.reported.accepted),
            }
        )
    return rows


class CooldownsPane(Static):
    """Call `show(state, now)` on every refresh tick."""

    DEFAULT_CSS = "CooldownsPane { height: auto; }"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[dict[str, str]] = []
        self._width = 0

    def show(self, state: MiningState, now: float) -> None:
        rows = cooldown_rows(state, now)
        width = self.content_size.width or 200
        if rows == self.rows and width == self._width and self.rows:
            return  # nothing moved: no redraw
        layout = len(rows) != len(self.rows) or not self.rows  # the table's height changes with its rows
        self.rows, self._width = rows, width
        table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        columns = [c for c, _ in COLUMNS]
        shown = {c.key for c in fit_columns(columns, natural_widths(columns, self.rows), width)}
        for column, justify in COLUMNS:
            if column.key in shown:
                table.add_column(column.label, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        views = sorted(state.validators.values(), key=lambda x: x.uid)
        for row, v in zip(self.rows, views, strict=True):
            style = STATE_STYLE.get(row["state"], "")
            cells: dict[str, str | Text] = {
                **row,
                "state": Text(row["state"], style=style),
                "bar": Text(row["bar"], style=style),
                "score": score_text(v, v.rules.quality_threshold),
            }
            table.add_row(*(cells[c.key] for c, _ in COLUMNS if c.key in shown))
        self.update(table, layout=layout)
