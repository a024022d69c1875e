"""The console's one key table: each row is a binding id, its default key, the action it runs, a
footer label, the help-screen text and the command-palette title.

The App's BINDINGS, the `?` help screen and the ctrl+p palette all read this table, so a key,
its help and its palette entry cannot drift apart. Users remap keys by binding id in the config
file's `keymap:` section; `help_rows` shows the key in force.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from textual.binding import Binding, BindingType

# `1` `2` `3` switch the selected endpoint; shift (`!` `@` `#`) applies to every endpoint.
PRESET_KEYS: tuple[str, ...] = ("text_mv_ultra_fast", "text_mv_fast", "text_mv")
PRESET_SHORT: tuple[str, ...] = ("ultra-fast", "fast", "quality")
ALL_KEYS: tuple[str, ...] = ("exclamation_mark", "at", "number_sign")


@dataclass(frozen=True)
class KeySpec:
    id: str  # binding id: what `keymap:` in the config file remaps
    key: str  # default key(s), comma-separated as Textual spells them
    action: str  # Textual action string, e.g. "set_preset('text_mv')"
    label: str  # footer label
    help: str  # one line in the `?` help screen
    palette: str | None = None  # command-palette title; None: not offered there
    palette_help: str = ""
    show: bool = True  # shown in the footer

    def binding(self) -> Binding:
        return Binding(self.key, self.action, self.label, show=self.show, id=self.id)


def _preset_rows() -> list[KeySpec]:
    rows = []
    for i, (name, short) in enumerate(zip(PRESET_KEYS, PRESET_SHORT, strict=True), start=1):
        rows.append(
            KeySpec(f"preset_{i}", str(i), f"set_preset('{name}')", short, f"selected endpoint → {name}")
        )
    for i, (key, name) in enumerate(zip(ALL_KEYS, PRESET_KEYS, strict=True), start=1):
        rows.append(
            KeySpec(
                f"preset_all_{i}",
                key,
                f"set_preset_all('{name}')",
                f"all→{name}",
                f"every endpoint → {name}",
                show=False,
            )
        )
    return rows


KEY_TABLE: tuple[KeySpec, ...] = (
    KeySpec(
        "spawn_endpoint",
        "n",
        "spawn_endpoint",
        "New",
        "spawn one more endpoint on the next free port (from 10006)",
        "Spawn endpoint",
        "start one more endpoint on the next free port",
    ),
    KeySpec(
        "stop_endpoint",
        "x",
        "stop_endpoint",
        "Stop",
        "stop the selected endpoint (asks first)",
        "Stop selected endpoint",
        "with confirmation",
    ),
    KeySpec(
        "restart_endpoint",
        "r",
        "restart_endpoint",
        "Restart",
        "restart the selected endpoint (or start a stopped one)",
        "Restart selected endpoint",
        "stop, then start again",
    ),
    *_preset_rows(),
    KeySpec(
        "advisor",
        "a",
        "advisor",
        "Advisor",
        "reward advisor: speed x quality per preset, reward per 4 h, tune rules (t applies)",
        "Reward advisor",
        "projected reward per preset and the tune suggestions",
        show=False,  # in ? help and the palette; the footer keeps room for v h ? q
    ),
    KeySpec(
        "apply_tune",
        "t",
        "apply_tune",
        "Tune",
        "apply the first tune suggestion to the selected endpoint (PUT /preset name+iters=...)",
        "Apply tune suggestion",
        "the advisor's first suggestion, on the selected endpoint",
        show=False,
    ),
    KeySpec(
        "refresh_slower",
        "plus",
        "refresh_slower",
        "Refresh+",
        "longer refresh interval",
        "Refresh slower",
        "longer refresh interval (+)",
        show=False,  # in ? help and the palette; the footer keeps room for v h ? q
    ),
    KeySpec(
        "refresh_faster",
        "minus",
        "refresh_faster",
        "Refresh-",
        "shorter refresh interval",
        "Refresh faster",
        "shorter refresh interval (-)",
        show=False,  # in ? help and the palette; the footer keeps room for v h ? q
    ),
    KeySpec(
        "cycle_view",
        "v",
        "cycle_view",
        "View",
        "next view: all panes / mining / GPUs / log (small terminals show one of them at a time)",
        "Next view",
        "all panes, mining, GPUs or log",
    ),
    KeySpec(
        "history",
        "h",
        "history",
        "History",
        "the last hour as plots: throughput, generation time, scores, GPU util/temp/power",
        "History plots",
        "the last hour: throughput, times, scores, GPUs",
    ),
    KeySpec(
        "help", "question_mark", "help", "Help", "this help", "Help: keys", "every key and its binding id"
    ),
    KeySpec(
        "quit",
        "q",
        "quit",
        "Quit",
        "quit: stop the endpoints, or leave them running for the next console",
        "Quit console",
        "stop endpoints or leave them running",
    ),
    # pm2 monit / nvitop habit: Ctrl-C leaves too (through the same stop-or-leave question)
    KeySpec(
        "quit_ctrl_c",
        "ctrl+c",
        "quit",
        "Quit",
        "same as q (endpoints run in their own sessions: Ctrl-C never reaches them)",
        show=False,
    ),
)


def bindings() -> list[BindingType]:
    return [spec.binding() for spec in KEY_TABLE]


def help_rows(
    keymap: Mapping[str, str], display: Callable[[str], str], table: Iterable[KeySpec] = KEY_TABLE
) -> list[tuple[str, str, str]]:
    """(keys in force, binding id, help text) per row; `keymap` holds the user's remaps by id."""
    rows = []
    for spec in table:
        keys = keymap.get(spec.id, spec.key)
        rows.append((", ".join(display(k.strip()) for k in keys.split(",")), spec.id, spec.help))
    return rows
