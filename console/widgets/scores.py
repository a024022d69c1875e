"""Recent scores pane: a sparkline and a table (time, validator, prompt, endpoint, preset, time, score).

Click the pane to show each score's parts as the validation service answers them (iqa,
alignment_score, ssim, lpips; rehearsal with a validation service only) instead of the
endpoint and preset columns."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from console.mining.ledger import ResultRecord
from console.mining.state import MiningState

ROWS = 5
NARROW_WIDTH = 100  # below it the endpoint column is dropped


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _endpoint(url: str | None) -> str:
    if not url:
        return "-"
    return url.split("//", 1)[-1].rstrip("/")


NO_SCORE = {
    "empty": "empty",
    "validation_failed": "failed",
    "submit_failed": "lost",
    "validation_locked": "locked",
    "resubmitted_too_quickly": "too soon",
    "wrong_task": "wrong task",
}
PART_NAMES = (("iqa", "iqa"), ("alignment_score", "align"), ("ssim", "ssim"), ("lpips", "lpips"))


def parts_text(r: ResultRecord) -> str:
    if not r.parts:
        return "-"
    return " ".join(f"{short} {r.parts[k]:.2f}" for k, short in PART_NAMES if k in r.parts)


def score_cell(r: ResultRecord) -> tuple[str, str]:
    """(text, style): the score and whether it made the 0.6 threshold."""
    if r.outcome in NO_SCORE:
        return NO_SCORE[r.outcome], "dim"
    if r.outcome == "zero":
        return "0.00 ?", "red"  # live: not accepted; rejected, empty or a guard (the log does not say)
    mark = "✓" if r.accepted else "✗"
    if r.score is None:
        return f"gate ok {mark}" if r.gate_only else f"- {mark}", "green" if r.accepted else "red"
    return f"{r.score:.2f} {mark}", "green" if r.accepted else "red"


def score_rows(state: MiningState, limit: int = ROWS) -> list[dict[str, str]]:
    rows = []
    for r in reversed(list(state.recent)[-limit:]):
        text, _ = score_cell(r)
        rows.append(
            {
                "time": _clock(r.t),
                "uid": str(r.uid),
                "prompt": r.prompt,
                "endpoint": _endpoint(r.endpoint),
                "preset": r.preset or "-",
                "gen": "-" if r.gen_time_s is None else f"{r.gen_time_s:.1f}s",
                "score": text,
                "parts": parts_text(r),
                "kind": ("image" if r.image else "text") + (f" duel {r.duel}" if r.duel else ""),
            }
        )
    return rows


class ScoresPane(Vertical):
    DEFAULT_CSS = """
    ScoresPane { height: auto; }
    ScoresPane Sparkline { height: 1; margin: 0 0 0 0; }
    ScoresPane #scores-caption { color: $text-muted; }
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[dict[str, str]] = []
        self.values: list[float] = []
        self.show_parts = False  # click toggles: the score's parts instead of endpoint/preset
        self._state: MiningState | None = None
        self._drawn: object = None  # what the panes show now (rows, mode, width class, count)

    def on_click(self) -> None:
        self.show_parts = not self.show_parts
        if self._state is not None:
            self.show(self._state)

    def compose(self) -> ComposeResult:
        yield Static("recent scores (threshold 0.60)", id="scores-caption")
        yield Sparkline([], id="scores-spark")
        yield Static(id="scores-table")

    def show(self, state: MiningState) -> None:
        self._state = state
        rows = score_rows(state)
        narrow = 0 < self.size.width < NARROW_WIDTH
        drawn = (rows, self.show_parts, narrow, len(state.recent))
        if drawn == self._drawn:
            return  # nothing new: no redraw (each redraw lays the screen out again)
        self._drawn = drawn
        self.rows = rows
        recent = list(state.recent)[-60:]
        # the sparkline plots scores we know; gate-only results have none
        self.values = [r.score for r in recent if r.score is not None]
        gate_only = sum(1 for r in recent if r.gate_only)
        caption = f"recent scores (threshold 0.60) · {len(state.recent)} results"
        if gate_only:
            caption += f" · {gate_only} gate-only (no quality score)"
        images = sum(1 for r in recent if r.image)
        if images:
            caption += f" · {images} image tasks"
        caption += " · click: " + ("endpoints" if self.show_parts else "score parts")
        self.query_one("#scores-caption", Static).update(caption)
        self.query_one("#scores-spark", Sparkline).data = self.values or [0.0]
        table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        # a narrow pane (80-column terminal, or beside the GPUs) drops the endpoint column so the
        # prompt keeps some room; the preset says which endpoint kind made it
        middle = (
            (("parts", "left", 36),)
            if self.show_parts
            else (("preset", "left", 10),)
            if narrow
            else (("endpoint", "left", 15), ("preset", "left", 10))
        )
        for name, justify, width in (
            ("time", "left", 8),
            ("UID", "right", 3),
            ("prompt", "left", None),
            *middle,
            ("gen", "right", 6),
            ("score", "right", 9),
        ):
            table.add_column(
                name,
                justify=justify,
                no_wrap=True,
                overflow="ellipsis",
                min_width=width,
                ratio=1 if width is None else None,
            )
        records = list(reversed(list(state.recent)[-ROWS:]))
        for row, r in zip(self.rows, records, strict=True):
            text, style = score_cell(r)
            middle_cells = (
                [row["parts"]]
                if self.show_parts
                else [row["preset"]]
                if narrow
                else [row["endpoint"], row["preset"]]
            )
            table.add_row(
                row["time"],
                row["uid"],
                row["prompt"],
                *middle_cells,
                row["gen"],
                Text(text, style=style),
            )
        self.query_one("#scores-table", Static).update(table)
