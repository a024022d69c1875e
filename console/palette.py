"""The ctrl+p command palette: every palette entry of the key table, plus each preset by name.

The palette runs the same action strings the keys run (App.run_action), so a palette entry and
its key cannot do different things.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console.keys import KEY_TABLE, PRESET_KEYS


@dataclass(frozen=True)
class PaletteCommand:
    title: str
    help: str
    run: Callable[[], object]


class OffersCommands(Protocol):
    def palette_commands(self) -> list[PaletteCommand]: ...


def build_commands(
    run_action: Callable[[str], Awaitable[object]], presets: Sequence[str]
) -> list[PaletteCommand]:
    """The key table's palette entries, then `Preset NAME: selected / all endpoints` per preset."""
    cmds = [
        PaletteCommand(spec.palette, spec.palette_help, partial(run_action, spec.action))
        for spec in KEY_TABLE
        if spec.palette
    ]
    extra = [n for n in presets if n not in PRESET_KEYS]  # smoke, user presets
    for name in (*PRESET_KEYS, *extra):
        cmds.append(
            PaletteCommand(
                f"Preset {name}: selected", "PUT /preset", partial(run_action, f"set_preset('{name}')")
            )
        )
        cmds.append(
            PaletteCommand(
                f"Preset {name}: all endpoints",
                "PUT /preset on each",
                partial(run_action, f"set_preset_all('{name}')"),
            )
        )
    return cmds


class ConsoleCommands(Provider):
    """Command palette (ctrl+p): the same actions as the keys."""

    def _commands(self) -> list[PaletteCommand]:
        app = self.app
        return app.palette_commands() if hasattr(app, "palette_commands") else []

    async def discover(self) -> Hits:
        for cmd in self._commands():
            yield DiscoveryHit(cmd.title, cmd.run, help=cmd.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for cmd in self._commands():
            score = matcher.match(cmd.title)
            if score > 0:
                yield Hit(score, matcher.highlight(cmd.title), cmd.run, help=cmd.help)
