"""Endpoints pane: a pm2-ls-like table, one row per endpoint, keyed by EndpointView.key (the port
for this machine's endpoints, "host:port" for another box's, which are marked ⇄).

Columns carry a priority (console/widgets/columns.py): on a narrow terminal the least important
go first (note, pid, port, p95, ...), while name, status, preset and throughput always stay.
`vram` and `sm%` are the endpoint process's own share of its GPU (NVML per-process accounting,
matched by pid; N/A where NVML cannot say, and always N/A for a remote row: its pid is another
box's)."""

from __future__ import annotations

import contextlib

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from console.gpu import ProcessUsage
from console.supervisor import EndpointView
from console.widgets.columns import Column, fit_columns, natural_widths
from console.widgets.fmt import NA, count, gib, num, rate, seconds, uptime

COLUMNS: tuple[Column, ...] = (
    Column("name", "name", 0),
    Column("port", "port", 9),  # the name says it (gen-PORT)
    Column("gpu", "gpu", 5),
    Column("preset", "preset", 0),
    Column("status", "status", 0),
    Column("pid", "pid", 8),
    Column("uptime", "uptime", 6),
    Column("restarts", "↺", 4),
    Column("active", "run", 2),  # generations running / max_batch
    Column("queue", "queue", 2),  # waiting behind them
    Column("done", "done", 3),
    Column("failed", "failed", 3),
    Column("vram", "vram", 5),
    Column("sm", "sm%", 6),
    Column("last", "last", 1),
    Column("mean", "mean", 4),
    Column("p95", "p95", 7),
    Column("per_hour", "/hour", 0),
    Column("note", "note", 10, max_width=60),
)
CELL_PADDING = 2  # DataTable's cell_padding=1 on each side

REMOTE_MARK = "⇄"  # another box's endpoint: watched and switched here, run there
TITLE = "Endpoints  (* = adopted / external)"
TITLE_WITH_REMOTES = f"Endpoints  (* = adopted / external, {REMOTE_MARK} = remote)"

STATUS_STYLE = {
    "starting": "cyan",
    "loading": "cyan",
    "warming": "green",
    "ready": "bold green",
    "busy": "bold yellow",
    "unhealthy": "bold red",
    "restarting": "magenta",
    "stopping": "magenta",
    "stopped": "dim",
    "errored": "bold white on red",
}


def _usage_cells(usage: ProcessUsage | None) -> tuple[str, str]:
    if usage is None:
        return NA, NA
    vram = NA if usage.mem_bytes is None else f"{gib(usage.mem_bytes)}G"
    return vram, num(usage.sm_util, unit="%")


def _active(v: EndpointView) -> str:
    """Running / how many may run at once: "3/8" on a batching endpoint, "1/1" one at a time."""
    if v.in_flight is None:
        return NA
    return f"{v.in_flight}/{v.max_batch}" if v.max_batch else str(v.in_flight)


def _note(v: EndpointView) -> str:
    if v.image_prompts:  # image tasks answered 422 at once: the miner submits them empty
        return (
            f"{v.image_prompts} image prompts refused; {v.message}"
            if v.message
            else f"{v.image_prompts} image prompts refused"
        )
    return v.message


def row_cells(v: EndpointView, usage: ProcessUsage | None = None) -> dict[str, str | Text]:
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
        "active": _active(v),
        "queue": count(v.queue),
        "done": count(v.done),
        "failed": Text(count(v.failed), style="red" if v.failed else ""),
        "vram": _usage_cells(usage)[0],
        "sm": _usage_cells(usage)[1],
        "last": seconds(v.last_s),
        "mean": seconds(v.mean_s),
        "p95": seconds(v.p95_s),
        "per_hour": rate(v.per_hour),
        "note": Text(_note(v)[:60], style="dim"),
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
        self.border_title = TITLE
        self.views: dict[str, EndpointView] = {}
        self._cells: dict[str, dict[str, str | Text]] = {}
        self.usage: dict[int, ProcessUsage] = {}  # pid -> GPU share, from the latest NVML sample
        self.shown: list[Column] = list(COLUMNS)

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for c in self.shown:
            self.add_column(c.label, key=c.key)

    def _fit(self) -> list[Column]:
        width = self.scrollable_content_region.width or self.size.width
        if width <= 0:
            return self.shown
        plain = [
            {k: (v.plain if isinstance(v, Text) else v) for k, v in c.items()} for c in self._cells.values()
        ]
        return fit_columns(COLUMNS, natural_widths(COLUMNS, plain), width, CELL_PADDING)

    def _relayout(self) -> None:
        """Show the columns that fit now; rebuilds the table only when that set changed."""
        shown = self._fit()
        if [c.key for c in shown] == [c.key for c in self.shown]:
            return
        selected = self.selected_key
        self.shown = shown
        self.clear(columns=True)
        self._add_columns()
        for row, cells in self._cells.items():
            self.add_row(*(self._cut(c, cells[c.key]) for c in self.shown), key=row)
        if selected is not None:
            self.select_port(selected)

    @staticmethod
    def _cut(column: Column, value: str | Text) -> str | Text:
        if column.max_width is None:
            return value
        text = value if isinstance(value, Text) else Text(value)
        if len(text.plain) > column.max_width:
            text = text.copy()
            text.truncate(column.max_width - 1)
            text.append("…")
        return text

    def on_resize(self) -> None:
        self._relayout()

    def show(self, views: list[EndpointView], usage: dict[int, ProcessUsage] | None = None) -> None:
        if usage is not None:
            self.usage = usage
        keys = [v.key for v in views]
        for row in list(self._cells):
            if row not in keys:
                self.remove_row(row)
                del self._cells[row]
        shown = {c.key: c for c in self.shown}
        for v in views:
            # a remote pid is another box's process: this machine's NVML says nothing about it
            local_pid = v.pid if not v.remote else None
            cells = row_cells(v, self.usage.get(local_pid) if local_pid is not None else None)
            old = self._cells.get(v.key)
            if old is None:
                self.add_row(*(self._cut(c, cells[c.key]) for c in self.shown), key=v.key)
            else:
                for key, value in cells.items():
                    if key in shown and old.get(key) != value:
                        self.update_cell(v.key, key, self._cut(shown[key], value), update_width=True)
            self._cells[v.key] = cells
        self.views = {v.key: v for v in views}
        title = TITLE_WITH_REMOTES if any(v.remote for v in views) else TITLE
        if title != self.border_title:  # setting it repaints, even to the same text
            self.border_title = title
        self._relayout()

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
