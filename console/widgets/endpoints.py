"""Endpoints pane: a pm2-ls-like table, one row per endpoint, keyed by EndpointView.key (the port
for this machine's endpoints, "host:port" for another box's, which are marked ⇄)."""

from __future__ import annotations

import contextlib

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from console.supervisor import EndpointView
from console.widgets.fmt import count, rate, seconds, uptime

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("port", "port"),
    ("gpu", "gpu"),
    ("preset", "preset"),
    ("status", "status"),
    ("pid", "pid"),
    ("uptime", "uptime"),
    ("restarts", "↺"),
    ("queue", "queue"),
    ("done", "done"),
    ("failed", "failed"),
    ("last", "last"),
    ("mean", "mean"),
    ("p95", "p95"),
    ("per_hour", "/hour"),
    ("note", "note"),
)

REMOTE_MARK = "⇄"  # another box's endpoint: watched and switched here, run there

STATUS_STYLE = {
    "starting": "cyan",
    "loading": "cyan",
    "ready": "bold green",
    "busy": "bold yellow",
    "unhealthy": "bold red",
    "restarting": "magenta",
    "stopping": "magenta",
    "stopped": "dim",
    "errored": "bold white on red",
}


def row_cells(v: EndpointView) -> dict[str, str | Text]:
    status = v.status
    if status == "loading" and v.progress is not None:
        status = f"loading {100 * float(v.progress):.0f}%"
    return {
        "name": v.name + (" *" if v.adopted else "") + (f" {REMOTE_MARK}" if v.remote else ""),
        "port": str(v.port),
        "gpu": v.gpu if v.gpu is not None else "all",
        "preset": v.preset,
        "status": Text(status, style=STATUS_STYLE.get(v.status, "")),
        "pid": count(v.pid),
        "uptime": uptime(v.uptime_s),
        "restarts": str(v.restarts),
        "queue": count(None if v.queue is None else v.queue + (v.in_flight or 0)),
        "done": count(v.done),
        "failed": Text(count(v.failed), style="red" if v.failed else ""),
        "last": seconds(v.last_s),
        "mean": seconds(v.mean_s),
        "p95": seconds(v.p95_s),
        "per_hour": rate(v.per_hour),
        "note": Text(v.message[:60], style="dim"),
    }


class EndpointsTable(DataTable[object]):
    """Rows keyed by view key; updating keeps the cursor on the same endpoint."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
    ]

    @classmethod
    def binding_ids(cls) -> list[str]:
        return [b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.border_title = f"Endpoints  (* = adopted / external, {REMOTE_MARK} = remote)"
        self.views: dict[str, EndpointView] = {}
        self._cells: dict[str, dict[str, str | Text]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, views: list[EndpointView]) -> None:
        keys = [v.key for v in views]
        for row in list(self._cells):
            if row not in keys:
                self.remove_row(row)
                del self._cells[row]
        for v in views:
            cells = row_cells(v)
            old = self._cells.get(v.key)
            if old is None:
                self.add_row(*(cells[k] for k, _ in COLUMNS), key=v.key)
            else:
                for key, value in cells.items():
                    if old.get(key) != value:
                        self.update_cell(v.key, key, value, update_width=True)
            self._cells[v.key] = cells
        self.views = {v.key: v for v in views}

    @property
    def selected_key(self) -> str | None:
        """The selected row's view key ("10006", or "host:port" for a remote endpoint)."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    @property
    def selected_port(self) -> int | None:
        """The selected local endpoint's port; None for a remote row or no selection."""
        key = self.selected_key
        return int(key) if key is not None and key.isdigit() else None

    def select_port(self, port: int | str) -> None:
        with contextlib.suppress(KeyError, RowDoesNotExist):
            self.move_cursor(row=self.get_row_index(str(port)))

    def cell_text(self, port: int | str, column: str) -> str:
        value = self._cells.get(str(port), {}).get(column, "")
        return value.plain if isinstance(value, Text) else str(value)
