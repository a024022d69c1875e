"""The endpoints table's run/queue cells and the note about refused image prompts, from /stats."""

from __future__ import annotations

from dataclasses import replace

from console.endpoint_client import summarise_stats
from console.widgets.endpoints import row_cells
from tests.support.console_demo import demo_views


def stats(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "requests": {"ok": 5, "failed": 0, "rejected": 0, "dropped": 0, "image_prompts": 2},
        "in_flight": 3,
        "queue_depth": 1,
        "recent": [],
        "uptime_s": 60.0,
        "max_batch": 4,
    }
    base.update(extra)
    return base


def test_stats_carry_the_batch_size_and_refused_image_prompts() -> None:
    summary = summarise_stats(stats())
    assert (summary.in_flight, summary.max_batch, summary.queue, summary.image_prompts) == (3, 4, 1, 2)
    older = summarise_stats({k: v for k, v in stats().items() if k != "max_batch"})  # an older endpoint
    assert older.max_batch is None


def test_row_shows_running_over_max_and_waiting_apart() -> None:
    busy = demo_views()[0]  # max_batch 4, every slot taken, one waiting
    cells = row_cells(busy)
    assert cells["active"] == "4/4"
    assert cells["queue"] == "1"
    assert "image" not in str(cells["note"])


def test_row_note_counts_refused_image_prompts() -> None:
    view = demo_views()[1]
    assert view.image_prompts == 3
    assert str(row_cells(view)["note"]).startswith("3 image prompts refused")
    assert row_cells(demo_views()[2])["active"] == "0/1"  # one at a time, idle
    older = row_cells(replace(demo_views()[2], max_batch=None))  # not reported: the running count
    assert older["active"] == "0"
