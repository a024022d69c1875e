"""Glue between the app and the mining panes: mount them into `#mining`, run the controller as a
worker, forward its changes to the app (MiningUpdated, console/ui_messages.py) and redraw the
countdowns on a timer that follows the console's refresh interval. Textual-side only; the domain
lives in console/mining."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from textual.app import App
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Static

from console.mining.controller import MiningController
from console.mining.miner_loop import EndpointSpec
from console.mining.options import MiningOptions
from console.ui_messages import forward_mining
from console.widgets.cooldowns import CooldownsPane
from console.widgets.reward import reward_line
from console.widgets.scores import ScoresPane

REFRESH_S = 0.5  # fastest pane refresh; slower when the console's refresh interval is longer


class MiningPanes:
    """Owns the controller and the three panes inside `container`."""

    def __init__(
        self,
        app: App,
        container: Widget,
        options: MiningOptions,
        endpoints: Callable[[], Sequence[EndpointSpec]],
        reward: Static,
        controller: MiningController | None = None,
    ) -> None:
        self.app = app
        self.container = container
        self.controller = controller or MiningController(options, endpoints)
        self.reward = reward
        self.cooldowns = CooldownsPane(id="cooldowns")
        self.scores = ScoresPane(id="scores")

    def mount(self, before: Widget | str | None = None) -> None:
        self.container.mount(self.cooldowns, self.scores, before=before)
        self.container.border_subtitle = self.controller.title()
        forward_mining(self.controller, self.app)
        self.app.run_worker(self.controller.run(), name="mining", group="mining", exit_on_error=False)
        self._schedule()

    def _schedule(self) -> None:
        # Countdowns move with the clock, so a timer redraws them (and the scores the miner loop
        # records); controller changes also arrive at once as MiningUpdated. The timer follows
        # the console's refresh interval (`+`/`-`): the panes were most of the console's own CPU
        # when they redrew every 0.5 s whatever the user had asked for.
        interval = max(REFRESH_S, float(getattr(self.app, "refresh_interval", REFRESH_S)))
        self.app.set_timer(interval, self._tick)

    def _tick(self) -> None:
        try:
            self.refresh()
        except NoMatches:  # the app is tearing the panes down under this timer: stop refreshing
            return
        self._schedule()

    def refresh(self) -> None:
        c = self.controller
        now = c.now()
        if self.container.border_subtitle != c.title():  # setting it repaints, even to the same text
            self.container.border_subtitle = c.title()
        self.cooldowns.show(c.state, now)
        if self.scores.is_mounted:
            self.scores.show(c.state)
        line = reward_line(c.state, now)
        if c.message:
            line = f"{c.message} · {line}"
        if line != self.reward_text:  # unchanged: no redraw and no layout pass
            self.reward.update(line)
            self.reward_text = line

    reward_text: str = ""

    def stop(self) -> None:
        self.controller.stop()


def endpoints_from_ports(
    ports: Callable[[], Sequence[int]], host: str = "127.0.0.1"
) -> Callable[[], list[EndpointSpec]]:
    return lambda: [EndpointSpec(f"http://{host}:{p}") for p in ports()]
