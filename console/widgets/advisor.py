"""`a`: the reward advisor (console/advisor.py) as a dialog: the speed x quality matrix per preset
with the best marked, the tune rules, and the suggestions for the selected endpoint; `t` applies
the first suggestion (the same as `t` on the main screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Static

from console.advisor import Advice, Suggestion, explain, matrix, read_bench_json
from console.mining.state import MiningState
from console.supervisor import EndpointView
from console.widgets.fmt import NA


def matrix_table(advice: Advice) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for label, justify in (
        ("", "left"),
        ("preset", "left"),
        ("time", "right"),
        ("score", "right"),
        ("accept", "right"),
        ("max tasks/4h", "right"),
        ("gens/4h", "right"),
        ("accepted/4h", "right"),
        ("reward/4h", "right"),
        ("bound by", "left"),
    ):
        table.add_column(label, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in advice.rows:
        style = "bold green" if r.best else ""
        table.add_row(
            "★" if r.best else "",
            r.preset,
            f"{r.gen_time_s:.1f}s {r.time_source}",
            NA if r.score is None else f"{r.score:.2f}",
            f"{r.acceptance:.0%}" + (" (assumed)" if r.acceptance_source == "assumed" else ""),
            f"{r.max_tasks_4h:.0f}",
            f"{r.generations_4h:.0f}",
            f"{r.accepted_4h:.0f}",
            f"{r.reward_4h:,.0f}",
            r.limited_by,
            style=style,
        )
    return table


def advisor_text(advice: Advice, endpoint: str | None, suggestions: list[Suggestion]) -> Group:
    parts: list[Text | Table] = []
    if advice.rows:
        parts.append(matrix_table(advice))
    else:
        parts.append(
            Text(
                "No measured generation times yet (endpoints' /stats, mining results or --bench-json).",
                style="dim",
            )
        )
    parts.append(Text("\nrules", style="bold"))
    parts.extend(Text(f"  {line}") for line in explain(advice))
    parts.append(Text(f"\nselected endpoint: {endpoint or '-'}", style="bold"))
    if not suggestions:
        parts.append(Text("  no rule fires: keep its preset", style="green"))
    for i, s in enumerate(suggestions):
        mark = "t → " if i == 0 else "    "
        parts.append(Text(f"  {mark}{s.ref}  [{s.rule}] {s.reason}", style="bold cyan" if i == 0 else ""))
    return Group(*parts)


class AdvisorScreen(ModalScreen[bool]):
    """Dismisses with True when the user asks to apply the first suggestion."""

    DEFAULT_CSS = """
    AdvisorScreen { align: center middle; }
    #advisor-box { width: 95%; height: auto; max-height: 90%; border: thick $accent;
                   background: $surface; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,a,q", "close", "Close", id="advisor.close"),
        Binding("t", "apply", "Apply suggestion", id="advisor.apply"),
    ]

    def __init__(self, advice: Advice, endpoint: str | None, suggestions: list[Suggestion]) -> None:
        super().__init__()
        self.advice = advice
        self.endpoint = endpoint
        self.suggestions = suggestions

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="advisor-box"):
            yield Static(Text("Reward advisor: projected per 4 hours", style="bold"))
            yield Static(advisor_text(self.advice, self.endpoint, self.suggestions), id="advisor-body")

    def action_close(self) -> None:
        self.dismiss(False)

    def action_apply(self) -> None:
        self.dismiss(bool(self.suggestions))


# ---------------------------------------------------------------- the App's two actions (a, t)


class AdvisorHost(Protocol):
    """What the advisor actions need of the App (Gen404Console provides it)."""

    endpoint_views: list[EndpointView]

    def advisor_inputs(self) -> tuple[MiningState, float, Path | None]: ...

    def selected_view(self) -> EndpointView | None: ...

    def apply_preset(self, view: EndpointView, ref: str) -> None: ...

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None: ...


def current_advice(host: AdvisorHost) -> tuple[Advice, EndpointView | None, list[Suggestion]]:
    state, now, bench = host.advisor_inputs()
    advice = matrix(state, now, host.endpoint_views, read_bench_json(bench))
    view = host.selected_view()
    return advice, view, advice.suggestions.get(view.key, []) if view is not None else []


def apply_first(host: AdvisorHost, view: EndpointView | None, suggestions: list[Suggestion]) -> None:
    if view is None:
        host.notify("No endpoint selected", severity="warning")
        return
    if not suggestions:
        host.notify(f"{view.name}: no tune rule fires (or no measurements yet): keep {view.preset}")
        return
    first = suggestions[0]
    host.notify(f"{view.name}: {first.reason} → {first.ref}", timeout=8)
    host.apply_preset(view, first.ref)
