"""`gen404-console`: the Textual operations console for 404-GEN miners.

    gen404-console                      # one endpoint on 10006, best runnable preset
    gen404-console --endpoints 4 --gpus 0,1 --preset text_mv_fast
    gen404-console --attach             # start nothing; watch/adopt what runs
    gen404-console --once [--json]      # one snapshot for scripts and cron (exit 1 if one is down)

Keys (each binding has an id; remap in the config file's `keymap:` section, `?` lists them):
    n new endpoint (next free port from 10006)   x stop selected (asks)   r restart selected
    1 2 3  selected endpoint -> text_mv_ultra_fast / text_mv_fast / text_mv (PUT /preset)
    ! @ #  (shift+1/2/3) the same preset on every endpoint
    + -    refresh interval slower / faster      ? help   ctrl+p command palette
    q / ctrl+c  quit: stop the endpoints, or leave them running for the next console to adopt
    j k / arrows  select an endpoint; its log tail shows below
    v  next view (all / mining / GPUs / log)   h  history plots (last hour)

Panes (one module each under console/widgets/): status line, banner and alerts strip (one line
each), GPUs, the mining column (cooldowns, scores, reward line: filled by `mount_mining_panes`),
endpoints table, log tail. The layout adapts to the terminal (app.tcss): below 32 rows one of
mining / GPUs / log shows at a time (`v` picks), below 110 columns GPUs stack over mining, the
GPU pane hides without a GPU, and the tables drop columns by priority.
Domain work runs off the UI: NVML sampling in a thread worker, the supervisor (process
checks, health probes, restarts) as an asyncio task; both hand plain snapshots to the panes.
This module never imports torch (nor any torch-using engine module).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from console import alerts, paths
from console.config import (
    AUTO,
    ConfigError,
    ConsoleConfig,
    available_presets,
    best_preset,
    load_config,
    step_refresh,
    weights_present,
)
from console.endpoint_client import ANSWERING, EndpointClient, EndpointError, switch_summary
from console.gpu import GpuSnapshot, NvmlSampler, ProcessUsage, cuda_gpu_count
from console.history import History
from console.keys import KEY_TABLE, bindings, help_rows
from console.mining.state import MiningState
from console.palette import ConsoleCommands, PaletteCommand, build_commands
from console.remote import RemoteEndpoints
from console.supervisor import EndpointView, Launcher, Prober, Supervisor, launch_endpoint
from console.supervisor.zygote import preloaded_launcher
from console.ui_messages import (
    EndpointsUpdated,
    GpuUpdated,
    MiningUpdated,
    RemotesUpdated,
    SupervisorNoticed,
    forward_remotes,
    forward_supervisor,
)
from console.widgets.advisor import AdvisorScreen, apply_first, current_advice
from console.widgets.alerts import AlertsStrip
from console.widgets.banner import Banner, StatusLine
from console.widgets.confirm import ConfirmScreen, QuitScreen
from console.widgets.endpoints import EndpointsTable
from console.widgets.gpu import GpuPane
from console.widgets.help import HelpScreen
from console.widgets.history import HistoryScreen
from console.widgets.logs import LogPane

VIEWS = ("all", "mining", "gpus", "log")  # `v` cycles; "all" needs SHORT_ROWS rows or more
SHORT_ROWS = 32


def binding_ids() -> set[str]:
    return {spec.id for spec in KEY_TABLE} | set(EndpointsTable.binding_ids())


class Gen404Console(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "gen404-console"
    BINDINGS = bindings()
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    # screen classes app.tcss lays out by (Textual sets them from the terminal size)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-medium"), (170, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT_ROWS, "-tall")]

    banner_messages: list[str]

    def __init__(
        self,
        config: ConsoleConfig | None = None,
        sampler: NvmlSampler | None = None,
        prober: Prober | None = None,
        launcher: Launcher = launch_endpoint,
        gpu_count: Callable[[], tuple[int, str | None]] = cuda_gpu_count,
        have_weights: Callable[[], bool] = weights_present,
        state_file: Path | None = None,
        supervise: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.config = config or ConsoleConfig()
        self.refresh_interval = self.config.refresh
        self.sampler = sampler or NvmlSampler()
        self.prober: Prober = prober or EndpointClient()
        self._gpu_count = gpu_count
        self._have_weights = have_weights
        self.state_file = state_file if state_file is not None else paths.state_file()
        self.supervisor = Supervisor(self.config.log_dir, self.state_file, self.prober, launcher=launcher)
        forward_supervisor(self.supervisor, self)
        self.remotes = RemoteEndpoints(self.config.remotes)  # other boxes' endpoints: watch only
        forward_remotes(self.remotes, self)
        self.supervise = supervise
        self.clock = clock  # wall clock for the status line and history (fixed in snapshot tests)
        self.view = "all"  # the user's pick (`v`); small terminals show "mining" for "all"
        self.history = History()
        self.gpu_snapshot: GpuSnapshot | None = None
        self.process_usage: dict[int, ProcessUsage] = {}  # pid -> GPU share (NVML per-process)
        self.default_preset = "smoke"
        self.banner_messages = []
        self._problems_shown: list[str] = []  # supervisor problems currently in the banner
        self.endpoint_views: list[EndpointView] = []  # local rows, then remote ones
        self._local_views: list[EndpointView] = []
        self.remote_views: list[EndpointView] = []
        self.remote_gpus: list[tuple[str, GpuSnapshot]] = []  # other boxes' GET /gpu, by host
        self._views_seq = 0  # the newest supervisor publication drawn (EndpointsChanged.seq)
        self._gpu_wake = threading.Event()
        self._stopping = threading.Event()
        # the user's remaps by binding id; the help screen reads this (not Textual's private map)
        self.keymap_overrides: dict[str, str] = dict(self.config.keymap or {})
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
            unknown = sorted(set(self.config.keymap) - binding_ids())
            if unknown:
                self.banner_messages.append(
                    f"keymap: unknown binding id(s) {', '.join(unknown)} (press ? for the ids)"
                )

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield StatusLine(id="status-line")
        yield Banner(id="banner")
        yield AlertsStrip(id="alerts")
        with Vertical(id="body", classes="view-all"):
            with Horizontal(id="top"):
                yield GpuPane(id="gpus")
                with Vertical(id="mining"):
                    yield Static("cooldowns: (mining panes not loaded)", id="cooldowns-placeholder")
                    yield Static("scores: (mining panes not loaded)", id="scores-placeholder")
                    yield Static("rewards: -", id="reward-summary")
            with Container(id="endpoints-box"):
                yield EndpointsTable(id="endpoints")
            yield LogPane(id="log")
        yield Footer(compact=True)

    def mount_mining_panes(self) -> None:
        """Hook for console/mining: replace the placeholders inside `#mining`.

        Called once from on_mount. Contract: keep the container `#mining` (layout/CSS in
        app.tcss); mount console/widgets/cooldowns.py and scores.py panes into it and remove
        `#cooldowns-placeholder` / `#scores-placeholder`; `#reward-summary` (a Static) is the
        one-line reward summary to update. Domain work (miner loop) should run as a worker.
        """
        from console.widgets.mining import MiningPanes, endpoints_from_ports

        box = self.query_one("#mining")
        self.query_one("#cooldowns-placeholder").remove()
        self.query_one("#scores-placeholder").remove()
        # the configured endpoints and every one the supervisor holds since (spawned with `n`)
        ports = endpoints_from_ports(
            lambda: list(
                dict.fromkeys([*(s.port for s in self.config.endpoints), *self.supervisor.endpoints])
            )
        )
        reward = self.query_one("#reward-summary", Static)
        self.mining = MiningPanes(self, box, self.config.mining, ports, reward)
        self.mining.mount(before=reward)

    async def on_mount(self) -> None:
        self.query_one("#mining").border_title = "Mining"
        self._apply_view()
        self.set_banner(self.banner_messages)
        self.query_one("#endpoints", EndpointsTable).focus()
        self.mount_mining_panes()
        self._update_status()
        self._gpu_loop()
        if self.supervise:
            self._supervise()
        if self.config.remotes:
            self._watch_remotes()

    # ------------------------------------------------------------------ GPU sampling (thread)
    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def _gpu_loop(self) -> None:
        worker = get_current_worker()
        try:
            while not worker.is_cancelled and not self._stopping.is_set():
                self.post_message(GpuUpdated(self.sampler.sample()))
                waited = 0.0
                while (
                    waited < self.refresh_interval and not worker.is_cancelled and not self._stopping.is_set()
                ):
                    if self._gpu_wake.wait(0.25):
                        self._gpu_wake.clear()
                        break
                    waited += 0.25
        finally:
            self.sampler.close()

    def on_gpu_updated(self, message: GpuUpdated) -> None:
        snap = message.snapshot
        self.gpu_snapshot = snap
        now = self.clock()
        self.history.record_gpus(snap, now)
        self.history.record_endpoints(
            [v.per_hour for v in self.endpoint_views], [v.last_s for v in self.endpoint_views], now
        )
        usage = {pid: u for g in snap.gpus for pid, u in (g.processes or {}).items()}
        # The sampler thread can post once more while the app tears its screen down.
        for pane in self.query(GpuPane):
            pane.show(snap)
        if usage != self.process_usage:  # the endpoints' vram / sm% columns
            self.process_usage = usage
            for table in self.query(EndpointsTable):
                table.show(self.endpoint_views, usage)
        self._apply_view()
        self.update_alerts()

    # ------------------------------------------------------------------ alerts, views, history
    def current_alerts(self) -> list[alerts.Alert]:
        mining = getattr(self, "mining", None)
        state = mining.controller.state if mining is not None else None
        now = mining.controller.now() if mining is not None else None
        return alerts.collect(self.gpu_snapshot, self.endpoint_views, state, now, self.remote_gpus)

    def update_alerts(self) -> None:
        found = self.current_alerts()
        mining = getattr(self, "mining", None)
        if mining is not None:
            self.history.record_scores((r.t, r.score) for r in mining.controller.state.recent)
        for strip in self.query(AlertsStrip):
            strip.show(found)

    def effective_view(self) -> str:
        """The view on screen: "all" shows as "mining" below SHORT_ROWS rows (app.tcss does that)."""
        if self.view == "all" and self.size.height < SHORT_ROWS:
            return "mining"
        return self.view

    def _apply_view(self) -> None:
        try:
            body = self.query_one("#body")
        except NoMatches:
            return
        for name in VIEWS:
            body.set_class(name == self.view, f"view-{name}")
        snap = self.gpu_snapshot
        # the pane stays while another box's GPUs are in it, even when this machine has none
        body.set_class(snap is not None and not snap.gpus and not self.remote_gpus, "-no-gpu")

    def action_cycle_view(self) -> None:
        order = [v for v in VIEWS if v != "all" or self.size.height >= SHORT_ROWS]
        current = self.effective_view()
        self.show_view(order[(order.index(current) + 1) % len(order)] if current in order else order[0])

    def show_view(self, name: str) -> None:
        """One of VIEWS: "all" panes, or only "mining", "gpus" or "log" (with the endpoints table)."""
        if name not in VIEWS:
            raise ValueError(f"unknown view {name!r} (one of {', '.join(VIEWS)})")
        self.view = name
        self._apply_view()
        self._update_status()

    def action_history(self) -> None:
        self.push_screen(HistoryScreen(self.history, lambda: self.refresh_interval, self.clock))

    # ------------------------------------------------------------------ supervisor (asyncio task)
    @work(exclusive=True, group="supervisor", exit_on_error=False)
    async def _supervise(self) -> None:
        count, _ = await asyncio.to_thread(self._gpu_count)
        have_weights = await asyncio.to_thread(self._have_weights)
        self.default_preset, reason = best_preset(count, have_weights)
        specs = self.config.endpoints
        uses_auto = any(s.preset == AUTO for s in specs) or not specs
        for spec in specs:
            if spec.preset == AUTO:
                spec.preset = self.default_preset
        if self.default_preset == "smoke" and uses_auto:
            self.set_banner(
                self.banner_messages
                + [
                    f"Endpoints run the CPU smoke preset ({reason}): its output is NOT meaningful for mining. "
                    "A CUDA box with MVDream weights (`gen404 models pull`) gets text_mv_fast."
                ]
            )
        self.supervisor.adopt_from_state()
        self.supervisor.ensure(specs, spawn=self.config.spawn)
        await self.supervisor.run(lambda: self.refresh_interval)

    # ------------------------------------------------------------------ remote boxes (asyncio task)
    @work(exclusive=True, group="remotes", exit_on_error=False)
    async def _watch_remotes(self) -> None:
        await self.remotes.run(lambda: self.refresh_interval)

    def on_remotes_updated(self, message: RemotesUpdated) -> None:
        self.remote_views = message.views
        had_boxes = bool(self.remote_gpus)
        self.remote_gpus = list(message.gpus)
        for pane in self.query(GpuPane):
            pane.show_remote(message.gpus)
        if had_boxes != bool(self.remote_gpus):
            self._apply_view()
        # the supervisor's next round (every refresh interval) draws the table with these rows;
        # drawing here too would double the console's redraws for no newer local data
        if not self.supervise or not self.endpoint_views:
            self.show_endpoints(self._local_views, self._views_seq)

    def on_endpoints_updated(self, message: EndpointsUpdated) -> None:
        # An action may have drawn fresher views (show_endpoints) while this one sat in the queue.
        if message.seq > self._views_seq:
            self.show_endpoints(message.views, message.seq)

    def on_supervisor_noticed(self, message: SupervisorNoticed) -> None:
        self.log.info(message.text)

    def on_mining_updated(self, message: MiningUpdated) -> None:
        mining = getattr(self, "mining", None)
        if mining is not None:
            try:
                mining.refresh()
            except NoMatches:  # a change published while the panes are torn down
                return

    def show_endpoints(self, views: list[EndpointView], seq: int | None = None) -> None:
        """Draw `views`: a published EndpointsUpdated (`seq`), or views an action just read."""
        self._views_seq = self.supervisor.views_published if seq is None else seq
        self._local_views = views
        self.endpoint_views = views + self.remote_views
        try:
            self.query_one(EndpointsTable).show(self.endpoint_views, self.process_usage)
            self._update_log()
            self._update_status()
            self._show_supervisor_problems()
            self.update_alerts()
        except NoMatches:  # the supervisor loop can report once more while the screen is torn down
            return

    def _show_supervisor_problems(self) -> None:
        """Files the supervisor cannot write (full disk, unusable state dir) go in the banner."""
        problems = list(self.supervisor.problems.values())
        if problems != self._problems_shown:
            kept = [m for m in self.banner_messages if m not in self._problems_shown]
            self._problems_shown = problems
            self.set_banner(kept + problems)

    def set_banner(self, messages: list[str]) -> None:
        self.banner_messages = messages
        self.query_one(Banner).set_messages(messages)

    def _update_status(self) -> None:
        ready = sum(1 for v in self.endpoint_views if v.status in ANSWERING)
        state = str(self.state_file.parent) if self.state_file else "-"
        view = self.effective_view()
        snap = self.gpu_snapshot
        gpus = ""
        if snap is not None and not snap.gpus:
            gpus = "no GPU: " + (snap.error or "none").split(" (")[0]
        for line in self.query(StatusLine):
            line.show(
                len(self.endpoint_views),
                ready,
                self.refresh_interval,
                state,
                now=self.clock(),
                view="" if view == "all" else view,
                gpus=gpus,
            )

    def _update_log(self) -> None:
        view = self.selected_view()
        pane = self.query_one(LogPane)
        if view is None or view.remote:  # a remote endpoint's log stays on its box
            pane.follow(None)
        else:
            pane.follow(Path(view.log_path), view.name)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_log()

    # ------------------------------------------------------------------ selection helpers
    def selected_port(self) -> int | None:
        return self.query_one(EndpointsTable).selected_port

    def selected_view(self) -> EndpointView | None:
        key = self.query_one(EndpointsTable).selected_key
        return next((v for v in self.endpoint_views if v.key == key), None)

    def _require_selection(self) -> int | None:
        """The selected local endpoint's port; a remote row is refused with the reason."""
        view = self.selected_view()
        if view is not None and view.remote:
            self.notify(
                f"{view.name} runs on another box: start, stop and restart it there", severity="warning"
            )
            return None
        port = self.selected_port()
        if port is None or port not in self.supervisor.endpoints:
            self.notify("No endpoint selected", severity="warning")
            return None
        return port

    # ------------------------------------------------------------------ actions
    def _least_used_gpu(self) -> str | None:
        """With several GPUs, pin a new endpoint to the one with the fewest endpoints."""
        snap = self.query_one(GpuPane).snapshot
        if snap is None or len(snap.gpus) < 2:
            return None
        used = [ep.spec.gpu for ep in self.supervisor.endpoints.values()]
        return min((str(g.index) for g in snap.gpus), key=lambda idx: (used.count(idx), int(idx)))

    def action_spawn_endpoint(self) -> None:
        ep = self.supervisor.spawn_next(
            self.default_preset, gpu=self._least_used_gpu(), first=self.config.first_port
        )
        self.show_endpoints(self.supervisor.views())
        self.query_one(EndpointsTable).select_port(ep.port)
        self.notify(f"Starting {ep.spec.name} ({ep.spec.preset}) on 127.0.0.1:{ep.port}")

    def action_stop_endpoint(self) -> None:
        port = self._require_selection()
        if port is None:
            return
        ep = self.supervisor.endpoints[port]
        if ep.external:
            self.notify(
                f"{ep.spec.name} was not started by this console: stop it where it runs", severity="warning"
            )
            return
        pid = ep.process.pid if ep.process else None

        def done(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._stop(port), group="actions")

        self.push_screen(ConfirmScreen(f"Stop {ep.spec.name} (port {port}, pid {pid})?"), done)

    async def _stop(self, port: int) -> None:
        await self.supervisor.stop(port)
        self.show_endpoints(self.supervisor.views())
        self.notify(f"Stopped gen-{port}")

    def action_restart_endpoint(self) -> None:
        port = self._require_selection()
        if port is not None:
            self.run_worker(self._restart(port), group="actions")

    async def _restart(self, port: int) -> None:
        ep = self.supervisor.endpoints[port]
        if ep.external:
            self.notify(f"{ep.spec.name} is not ours (attach mode): not restarting", severity="warning")
            return
        await self.supervisor.restart_or_start(port)
        self.show_endpoints(self.supervisor.views())
        self.notify(f"Restarting {ep.spec.name}")

    def action_set_preset(self, name: str) -> None:
        view = self.selected_view()
        if view is not None and view.remote:
            self.run_worker(self._set_presets([], name, [view.key]), group="actions")
            return
        port = self._require_selection()
        if port is not None:
            self.run_worker(self._set_presets([port], name), group="actions")

    def action_set_preset_all(self, name: str) -> None:
        ports = [p for p, ep in self.supervisor.endpoints.items() if ep.running or ep.external]
        remotes = [v.key for v in self.remote_views]
        if not ports and not remotes:
            self.notify("No running endpoints", severity="warning")
            return
        self.run_worker(self._set_presets(ports, name, remotes), group="actions")

    async def _set_presets(self, ports: Sequence[int], name: str, remotes: Sequence[str] = ()) -> None:
        """PUT /preset `name` (a preset or a reference "text_mv_fast+iters=300") on local `ports`
        and on the remote endpoints `remotes` (view keys host:port)."""
        labels = [f"gen-{p}" for p in ports] + list(remotes)
        results = await asyncio.gather(
            *(self.supervisor.set_preset(p, name) for p in ports),
            *(self.remotes.set_preset(key, name) for key in remotes),
            return_exceptions=True,
        )
        for label, result in zip(labels, results, strict=True):
            if isinstance(result, EndpointError):
                self.notify(str(result), severity="error")
            elif isinstance(result, BaseException):
                self.notify(f"{label}: {type(result).__name__}: {result}", severity="error")
            else:
                self.notify(f"{label} → {result.get('preset') or name}{switch_summary(result)}")
        self.show_endpoints(self.supervisor.views())

    # ------------------------------------------------------------------ reward advisor (a, t)
    def advisor_inputs(self) -> tuple[MiningState, float, Path | None]:
        mining = getattr(self, "mining", None)
        if mining is None:
            return MiningState(), time.time(), self.config.bench_json
        return mining.controller.state, mining.controller.now(), self.config.bench_json

    def apply_preset(self, view: EndpointView, ref: str) -> None:
        """PUT /preset `ref` (a preset or "text_mv_fast+iters=300") on one endpoint, local or remote."""
        if view.remote:
            self.run_worker(self._set_presets([], ref, [view.key]), group="actions")
        else:
            self.run_worker(self._set_presets([view.port], ref), group="actions")

    def action_advisor(self) -> None:
        advice, view, suggestions = current_advice(self)

        def done(apply: bool | None) -> None:
            if apply:
                apply_first(self, view, suggestions)

        self.push_screen(AdvisorScreen(advice, view.name if view else None, suggestions), done)

    def action_apply_tune(self) -> None:
        _, view, suggestions = current_advice(self)
        apply_first(self, view, suggestions)

    def action_refresh_slower(self) -> None:
        self._set_refresh(step_refresh(self.refresh_interval, +1))

    def action_refresh_faster(self) -> None:
        self._set_refresh(step_refresh(self.refresh_interval, -1))

    def _set_refresh(self, value: float) -> None:
        self.refresh_interval = value
        self._gpu_wake.set()
        self.supervisor.wake()
        self.remotes.wake()
        self._update_status()
        self.notify(f"Refresh every {value:g}s", timeout=1.5)

    def key_rows(self) -> list[tuple[str, str, str]]:
        """(keys as currently bound, binding id, help text) for the help screen."""
        return help_rows(self.keymap_overrides, lambda key: self.get_key_display(Binding(key, "")))

    def action_help(self) -> None:
        cfg = self.config.config_path or paths.config_file()
        self.push_screen(HelpScreen(self.key_rows(), str(cfg)))

    async def action_quit(self) -> None:
        running = [ep for ep in self.supervisor.endpoints.values() if ep.running and not ep.external]
        if not running:
            await self._finish(stop=False)
            return

        async def done(choice: str | None) -> None:
            if choice in ("stop", "leave"):
                await self._finish(stop=choice == "stop")

        self.push_screen(QuitScreen(len(running)), done)

    async def _finish(self, stop: bool) -> None:
        if stop:
            self.notify("Stopping endpoints…", timeout=10)
            await asyncio.sleep(0)  # let the notice paint before the (up to 5 s) wait
        self._stopping.set()
        self._gpu_wake.set()
        await self.supervisor.shutdown(stop_endpoints=stop)
        await self.remotes.shutdown()
        self.exit()

    def palette_commands(self) -> list[PaletteCommand]:
        return build_commands(self.run_action, available_presets())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"gen404-console: error: {exc}", file=sys.stderr)
        return 2
    if config.once and config.mining.miner_log is not None:
        from console.mining.once import run_once_mining

        return run_once_mining(config.mining, as_json=config.json)
    if config.once:
        from console.snapshot import run_once

        return run_once(config, as_json=config.json)
    launcher = preloaded_launcher(config.log_dir) if config.preload else launch_endpoint
    try:
        Gen404Console(config, launcher=launcher).run()
    finally:
        close = getattr(launcher, "close", None)
        if callable(close):
            close()  # the fork server goes; endpoints left running live on
    return 0


if __name__ == "__main__":
    sys.exit(main())
