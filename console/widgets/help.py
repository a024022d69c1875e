"""`?` help: every key with its binding id (remap any of them in the config file's `keymap:`)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

EXTRA_KEYS: tuple[tuple[str, str, str], ...] = (
    ("↑ ↓ / j k", "table.down/up", "select an endpoint; its log shows below (* = not started here)"),
    ("ctrl+p", "(palette)", "command palette: every action by name"),
    ("esc", "", "close this help / a dialog"),
)


def help_table(rows: list[tuple[str, str, str]], config_file: str) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("binding id", style="dim", no_wrap=True)
    table.add_column("action")
    for key, binding_id, text in [*rows, *EXTRA_KEYS]:
        table.add_row(key, binding_id, text)
    table.caption = Text(f"Remap keys in {config_file} under `keymap:` (binding id: key)", style="dim")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss_help", "Close", id="help.close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str]], config_file: str) -> None:
        super().__init__()
        self.rows = rows
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text("gen404-console keys", style="bold"), id="help-title")
            yield Static(help_table(self.rows, self.config_file), id="help-table")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
