"""The supervision loop: spawn, adopt, health-check and restart endpoints with back-off (no Textual).

Running endpoints are written to the state file (see state_file.py) so a later console
re-adopts them. The clock, the process launcher and the HTTP prober are injectable: unit tests
drive crashes and back-off without processes or sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from console.config import EndpointSpec, switch_refusal
from console.endpoint_client import EndpointError, Probe, StatsSummary, health_note
from console.publisher import Publisher
from console.supervisor.model import (
    RUNNING_STATES,
    BackoffPolicy,
    EndpointsChanged,
    EndpointView,
    Launcher,
    ManagedEndpoint,
    Prober,
    Status,
    SupervisorEvent,
    SupervisorNotice,
    status_from_health,
)
from console.supervisor.processes import AdoptedProcess, launch_endpoint, port_in_use, proc_alive
from console.supervisor.state_file import read_state, state_items, write_state

FIRST_PORT = 10006


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        state_file: Path | None,
        prober: Prober,
        launcher: Launcher = launch_endpoint,
        clock: Callable[[], float] = time.monotonic,
        policy: BackoffPolicy | None = None,
        unhealthy_after: int = 3,
        restart_after: int = 5,
        startup_grace: float = 180.0,
        port_check: Callable[[int], bool] = port_in_use,
    ) -> None:
        self.log_dir = log_dir
        self.state_file = state_file
        self.prober = prober
        self.launcher = launcher
        self.clock = clock
        self.policy = policy or BackoffPolicy()
        self.unhealthy_after = unhealthy_after
        self.restart_after = restart_after
        self.startup_grace = startup_grace
        self.port_check = port_check
        self.endpoints: dict[int, ManagedEndpoint] = {}
        # files it cannot write (state file, endpoint logs): shown by the UI, never fatal
        self.problems: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._closed = False
        # notices and fresh views for whoever listens (the UI adapter, tests); see publisher.py
        self.changes: Publisher[SupervisorEvent] = Publisher()
        self.views_published = 0  # EndpointsChanged.seq of the latest publication

    # -- bookkeeping
    def _event(self, text: str) -> None:
        self.changes.publish(SupervisorNotice(text))

    def publish_views(self) -> None:
        """Publish the current views (the loop does after every change; actions may call it too)."""
        self.views_published += 1
        self.changes.publish(
            EndpointsChanged(tuple(self.views()), tuple(self.problems.values()), self.views_published)
        )

    def _problem(self, key: str, text: str | None) -> None:
        """Record (text) or clear (None) a standing problem; each new one is also an event."""
        if text is None:
            self.problems.pop(key, None)
        elif self.problems.get(key) != text:
            self.problems[key] = text
            self._event(text)

    def wake(self) -> None:
        self._wake.set()

    def log_path(self, port: int) -> Path:
        return self.log_dir / f"gen-{port}.log"

    def add(self, spec: EndpointSpec, start: bool = True) -> ManagedEndpoint:
        if spec.port in self.endpoints:
            raise ValueError(f"port {spec.port} is already supervised")
        ep = ManagedEndpoint(spec=spec, log_path=self.log_path(spec.port))
        self.endpoints[spec.port] = ep
        if start:
            self.start(spec.port)
        return ep

    def watch(self, spec: EndpointSpec) -> ManagedEndpoint:
        """Watch a port we did not start (attach mode, or a port already taken)."""
        ep = ManagedEndpoint(
            spec=spec, log_path=self.log_path(spec.port), status=Status.STARTING, external=True
        )
        self.endpoints[spec.port] = ep
        return ep

    def next_free_port(self, first: int = FIRST_PORT) -> int:
        port = first
        while port in self.endpoints or self.port_check(port):
            port += 1
        return port

    def spawn_next(self, preset: str, gpu: str | None = None, first: int = FIRST_PORT) -> ManagedEndpoint:
        ep = self.add(EndpointSpec(self.next_free_port(first), preset, gpu))
        self._event(f"spawned {ep.spec.name} ({preset})")
        return ep

    # -- lifecycle
    def start(self, port: int) -> None:
        ep = self.endpoints[port]
        ep.restart_due = None
        ep.health_failures = 0
        ep.ever_healthy = False
        ep.probe = None
        ep.external = False
        try:
            ep.process = self.launcher(ep.spec, ep.log_path)
        except OSError as exc:
            ep.process = None
            ep.status = Status.ERRORED
            ep.message = f"cannot start: {exc}"
            self._event(f"{ep.spec.name}: {ep.message}")
            return
        self._problem(f"log {port}", getattr(ep.process, "log_error", None))
        ep.adopted = False
        ep.started_at = self.clock()
        ep.status = Status.STARTING
        ep.message = ""
        self.save_state()
        self.wake()

    async def _terminate(self, ep: ManagedEndpoint, grace: float = 5.0) -> None:
        proc = ep.process
        if proc is None or proc.poll() is not None:
            return
        proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.signal(signal.SIGKILL)
            for _ in range(40):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)

    async def stop(self, port: int) -> None:
        ep = self.endpoints[port]
        ep.status = Status.STOPPING  # first, so the exit is not taken for a crash
        ep.restart_due = None
        await self._terminate(ep)
        ep.status = Status.STOPPED
        ep.message = "stopped by user"
        ep.probe = None
        self.save_state()
        self._event(f"stopped {ep.spec.name}")
        self.wake()

    async def restart(self, port: int, reason: str = "restarted by user") -> None:
        ep = self.endpoints[port]
        ep.status = Status.RESTARTING
        await self._terminate(ep)
        ep.restarts += 1
        self.start(port)
        ep.message = reason
        self._event(f"{ep.spec.name}: {reason}")

    async def restart_or_start(self, port: int) -> None:
        """The `r` key: restart a running endpoint, or give a stopped/errored one a fresh start
        (its quick-crash count starts again from zero)."""
        ep = self.endpoints[port]
        if ep.status in RUNNING_STATES:
            await self.restart(port)
        else:
            ep.quick_crashes = 0
            self.start(port)

    async def remove(self, port: int) -> None:
        await self.stop(port)
        del self.endpoints[port]
        self.save_state()

    # -- crash handling (synchronous: unit tests call it with a fake clock)
    def check_processes(self, now: float | None = None) -> bool:
        """Notice exits and start due restarts; True when something changed."""
        now = self.clock() if now is None else now
        changed = False
        for ep in self.endpoints.values():
            if ep.status in RUNNING_STATES and ep.process is not None:
                code = ep.process.poll()
                if code is None:
                    if ep.started_at is not None and now - ep.started_at >= self.policy.reset_after:
                        ep.quick_crashes = 0
                    continue
                self._on_exit(ep, code, now)
                changed = True
            elif ep.status is Status.RESTARTING and ep.restart_due is not None and now >= ep.restart_due:
                ep.restarts += 1
                self.start(ep.port)
                ep.message = f"restarted after crash ({ep.quick_crashes} quick)"
                changed = True
        return changed

    def _on_exit(self, ep: ManagedEndpoint, code: int, now: float) -> None:
        uptime = now - (ep.started_at if ep.started_at is not None else now)
        if uptime >= self.policy.reset_after:
            ep.quick_crashes = 0
        ep.quick_crashes += 1
        ep.probe = None
        how = f"signal {-code}" if code < 0 and code != -1 else f"exit code {code}" if code != -1 else "gone"
        if ep.quick_crashes >= self.policy.max_quick_crashes:
            ep.status = Status.ERRORED
            ep.restart_due = None
            ep.message = f"{ep.quick_crashes} quick crashes in a row ({how}); see {ep.log_path}"
            self._event(f"{ep.spec.name} errored: {ep.message}")
        else:
            delay = self.policy.delay(ep.quick_crashes)
            ep.status = Status.RESTARTING
            ep.restart_due = now + delay
            ep.message = f"crashed ({how}); restart in {delay:.1f}s"
            self._event(f"{ep.spec.name} {ep.message}")
        self.save_state()

    def next_due(self) -> float | None:
        dues = [ep.restart_due for ep in self.endpoints.values() if ep.restart_due is not None]
        return min(dues) if dues else None

    # -- health
    async def probe_all(self) -> None:
        targets = [ep for ep in self.endpoints.values() if ep.status in RUNNING_STATES or ep.external]
        probes = await asyncio.gather(*(self.prober.probe(ep.port) for ep in targets), return_exceptions=True)
        for ep, probe in zip(targets, probes, strict=True):
            if isinstance(probe, BaseException):
                probe = Probe(port=ep.port, error=f"{type(probe).__name__}: {probe}")
            await self._apply_probe(ep, probe)

    async def _apply_probe(self, ep: ManagedEndpoint, probe: Probe) -> None:
        if ep.status not in RUNNING_STATES and not ep.external:
            return  # stopped/restarting while the probe was in flight
        if probe.ok:
            ep.probe = probe
            ep.health_failures = 0
            ep.ever_healthy = True
            ep.status = self._status_from_health(ep, probe)
            self._follow_served_preset(ep, probe)
            return
        ep.health_failures += 1
        if ep.external:
            ep.probe = None
            ep.status = Status.UNHEALTHY if ep.ever_healthy else Status.STARTING
            ep.message = f"watching: not answering ({probe.error})"
            return
        started = ep.started_at if ep.started_at is not None else self.clock()
        in_grace = not ep.ever_healthy and self.clock() - started < self.startup_grace
        if in_grace:
            ep.message = "" if probe.error == "connection refused" else f"health: {probe.error}"
            return
        if ep.health_failures >= self.restart_after:
            await self.restart(ep.port, reason=f"restarted: {ep.health_failures} failed health checks")
        elif ep.health_failures >= self.unhealthy_after:
            ep.status = Status.UNHEALTHY
            ep.message = f"{ep.health_failures} failed health checks ({probe.error})"

    def _follow_served_preset(self, ep: ManagedEndpoint, probe: Probe) -> None:
        """A restart brings back the preset the endpoint serves: a switch is swapped in on the
        endpoint before the client that asked hears of it (or made with curl), and a failed one
        never changes it."""
        served = (probe.health or {}).get("preset")
        if ep.external or ep.status not in (Status.WARMING, Status.READY, Status.BUSY):
            return
        if isinstance(served, str) and served and served != ep.spec.preset:
            ep.spec.preset = served
            self.save_state()

    @staticmethod
    def _status_from_health(ep: ManagedEndpoint, probe: Probe) -> Status:
        health = probe.health or {}
        ep.message = ("watching: " if ep.external else "") + health_note(health)
        return status_from_health(health, probe.summary)

    async def set_preset(self, port: int, name: str) -> dict[str, Any]:
        """Switch an endpoint's preset; returns when the endpoint serves it (the endpoint builds it
        beside the old one, docs/endpoints.md). Raises EndpointError naming why when it does not:
        refused here (missing weights, checked first), refused by the endpoint, or its build
        failed; in every case the endpoint keeps serving its old preset, and so does a restart."""
        ep = self.endpoints[port]
        if not ep.running and not ep.external:
            raise EndpointError(f"{ep.spec.name} is {ep.status.value}: start it first")
        health = ep.probe.health if ep.probe is not None and ep.probe.health else {}
        current = str(health.get("preset") or ep.spec.preset)
        # ours run without --random-weights; one we only watch may have it: it checks for itself
        reason = None if ep.external else switch_refusal(name)
        if reason:
            raise EndpointError(f"{ep.spec.name} stays on {current}: {reason}")
        result = await self.prober.set_preset(port, name)
        ep.spec.preset = name  # a later restart keeps the new preset
        self.save_state()
        probe = await self.prober.probe(port)
        await self._apply_probe(ep, probe)
        self.wake()
        return result

    # -- adoption / state file
    def save_state(self) -> None:
        if self.state_file is None:
            return
        try:
            write_state(self.state_file, state_items(self.endpoints.values()))
        except OSError as exc:  # full disk, read-only or unusable state dir: keep supervising
            self._problem(
                "state",
                f"cannot write {self.state_file} ({exc.strerror or exc}): "
                "endpoints left running at quit will not be adopted",
            )
            return
        self._problem("state", None)

    def adopt_from_state(self) -> list[ManagedEndpoint]:
        """Re-adopt endpoints a previous console left running (pid + start time must match)."""
        adopted = []
        for item in read_state(self.state_file):
            port, pid, ticks = int(item["port"]), int(item["pid"]), item.get("start_ticks")
            if port in self.endpoints or not proc_alive(pid, ticks):
                continue
            spec = EndpointSpec(port, str(item.get("preset") or "smoke"), item.get("gpu"))
            ep = ManagedEndpoint(
                spec=spec,
                log_path=Path(item.get("log_path") or self.log_path(port)),
                status=Status.STARTING,
                process=AdoptedProcess(pid, ticks),
                restarts=int(item.get("restarts") or 0),
                started_at=self.clock(),
                adopted=True,
                message="adopted from a previous console",
            )
            self.endpoints[port] = ep
            adopted.append(ep)
        if adopted:
            self._event(f"adopted {len(adopted)} running endpoint(s)")
        return adopted

    def ensure(self, specs: Sequence[EndpointSpec], spawn: bool) -> None:
        """Bring up the configured endpoints: adopted ones stay, busy ports are watched."""
        for spec in specs:
            if spec.port in self.endpoints:
                continue
            if not spawn or self.port_check(spec.port):
                self.watch(spec)
            else:
                self.add(spec)

    async def shutdown(self, stop_endpoints: bool) -> None:
        """Quit: stop every endpoint, or leave them running and record them for adoption."""
        self._closed = True
        self.wake()
        if stop_endpoints:
            await asyncio.gather(*(self._terminate(ep) for ep in self.endpoints.values()))
            for ep in self.endpoints.values():
                if not ep.external:
                    ep.status = Status.STOPPED
        self.save_state()

    # -- views and the loop
    def views(self) -> list[EndpointView]:
        now = time.time()
        out = []
        for ep in self.endpoints.values():
            health = (ep.probe.health if ep.probe else None) or {}
            summary = ep.probe.summary if ep.probe else StatsSummary()
            running = ep.status in RUNNING_STATES and ep.process is not None
            pid = ep.process.pid if running and ep.process else health.get("pid") if ep.external else None
            uptime = None
            if running and ep.process is not None:
                uptime = max(0.0, now - ep.process.started_wall)
            elif ep.external and summary.uptime_s is not None:
                uptime = float(summary.uptime_s)
            out.append(
                EndpointView(
                    name=ep.spec.name,
                    port=ep.port,
                    gpu=ep.spec.gpu,
                    preset=str(health.get("preset") or ep.spec.preset),
                    status=ep.status.value,
                    pid=pid,
                    uptime_s=uptime,
                    restarts=ep.restarts,
                    **summary.view_fields(),
                    message=ep.message,
                    log_path=str(ep.log_path),
                    adopted=ep.adopted or ep.external,
                    device=health.get("device"),
                    progress=health.get("progress"),
                    quick_crashes=ep.quick_crashes,
                )
            )
        return out

    async def run(self, refresh: Callable[[], float]) -> None:
        """Supervise until shutdown(): exits/restarts every <=0.5 s, probes every `refresh` s.

        Publishes EndpointsChanged after each probe round and after anything changed (an exit, a
        restart, an action that woke the loop); idle wake-ups cost a few poll() calls.
        """
        last_probe = -1e18
        woken = True
        while not self._closed:
            changed = self.check_processes() or woken
            if self.clock() >= last_probe + refresh():
                await self.probe_all()
                last_probe = self.clock()
                changed = True
            if self._closed:
                break
            if changed:
                self.publish_views()
            wake_at = min(last_probe + refresh(), self.clock() + 0.5)
            due = self.next_due()
            if due is not None:
                wake_at = min(wake_at, due)
            self._wake.clear()
            woken = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wake_at - self.clock()))
                woken = True
