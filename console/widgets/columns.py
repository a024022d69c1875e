"""Which table columns fit: drop the least important ones first when the pane is narrow.

Each table lists its columns as `Column(key, label, priority)`; priority 0 is never dropped,
higher numbers go first. A column's width is the widest of its label and its cells, plus the
table's padding. Order on screen stays the table's own order. No Textual imports: pure layout
arithmetic that the endpoints table, the mining tables and tests share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    priority: int = 0  # 0: always shown; the highest number is dropped first
    max_width: int | None = None  # cap for free-text columns (they are cut with "…")


def natural_widths(columns: Sequence[Column], rows: Iterable[Mapping[str, str]]) -> dict[str, int]:
    widths = {c.key: len(c.label) for c in columns}
    for row in rows:
        for c in columns:
            widths[c.key] = max(widths[c.key], len(row.get(c.key, "")))
    for c in columns:
        if c.max_width is not None:
            widths[c.key] = min(widths[c.key], c.max_width)
    return widths


def fit_columns(
    columns: Sequence[Column], widths: Mapping[str, int], available: int, padding: int = 2
) -> list[Column]:
    """The columns to show in `available` cells, in table order."""
    kept = list(columns)
    need = sum(widths.get(c.key, len(c.label)) + padding for c in kept)
    # highest priority number first; among equals, the rightmost first
    order = sorted(
        (i for i, c in enumerate(columns) if c.priority > 0), key=lambda i: (-columns[i].priority, -i)
    )
    for drop in (columns[i] for i in order):
        if need <= available:
            break
        kept.remove(drop)
        need -= widths.get(drop.key, len(drop.label)) + padding
    return kept
