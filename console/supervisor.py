"""Endpoint processes, pm2-style: spawn, adopt, health-check, restart with back-off (no Textual).

Each endpoint is `gen404 serve --port P --preset NAME --host 127.0.0.1`, spawned with exec (an
argument list, never a shell) in its own session, so Ctrl-C in the console's terminal does not
reach it; stdout and stderr go to ``<log_dir>/gen-<port>.log``. Running endpoints are written to
a state file (pid + the process start time from /proc/<pid>/stat) so a later console re-adopts
them and a reused pid is never mistaken for one of ours.

The clock, the process launcher and the HTTP prober are injectable: unit tests drive crashes and
back-off without processes or sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from console.config import EndpointSpec
from console.endpoint_client import EndpointError, Probe, StatsSummary

FIRST_PORT = 10006
LOG_ROTATE_BYTES = 20 * 1024 * 1024


class Status(str, Enum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERRORED = "errored"


RUNNING_STATES = {Status.STARTING, Status.LOADING, Status.READY, Status.BUSY, Status.UNHEALTHY}


@dataclass(frozen=True)
class BackoffPolicy:
    """Restart delay: `initial` growing x`factor` up to `maximum`; reset once a process stayed up
    `reset_after` seconds; `max_quick_crashes` crashes in a row (each before `reset_after`) -> errored."""

    initial: float = 0.1
    factor: float = 1.5
    maximum: float = 15.0
    reset_after: float = 30.0
    max_quick_crashes: int = 10

    def delay(self, crashes: int) -> float:
        return min(self.maximum, self.initial * self.factor ** max(0, crashes - 1))


# ---------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
    try:
        return rest[0], int(rest[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None


def proc_alive(pid: int, start_ticks: int | None) -> bool:
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[1] == start_ticks


def proc_started_wall(start_ticks: int) -> float | None:
    """Wall-clock start of a process from its start ticks (boot time from /proc/stat)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


class ProcessHandle(Protocol):
    pid: int
    start_ticks: int | None
    started_wall: float

    def poll(self) -> int | None:
        """None while running, else the exit code (-signal; -1 when unknown)."""

    def signal(self, sig: int) -> None: ...


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # our endpoints lead their own session/group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class ChildProcess:
    """An endpoint this console spawned (a subprocess.Popen in its own session)."""

    def __init__(self, popen: subprocess.Popen[bytes], log_error: str | None = None) -> None:
        self._popen = popen
        self.log_error = log_error  # set when its output could not go to the log file
        self.pid = popen.pid
        stat = proc_stat(popen.pid)
        self.start_ticks = stat[1] if stat else None
        self.started_wall = time.time()

    def poll(self) -> int | None:
        return self._popen.poll()

    def signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            _signal_group(self.pid, sig)


class AdoptedProcess:
    """An endpoint spawned by an earlier console: watched through /proc (not our child)."""

    def __init__(self, pid: int, start_ticks: int | None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.started_wall = (proc_started_wall(start_ticks) if start_ticks else None) or time.time()

    def poll(self) -> int | None:
        return None if proc_alive(self.pid, self.start_ticks) else -1

    def signal(self, sig: int) -> None:
        if proc_alive(self.pid, self.start_ticks):  # never signal a reused pid
            _signal_group(self.pid, sig)


def serve_command(spec: EndpointSpec, host: str = "127.0.0.1") -> list[str]:
    """`gen404 serve ...` from the console's own environment (the venv's script, else -m)."""
    script = Path(sys.executable).parent / "gen404"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]
    return [*head, "serve", "--port", str(spec.port), "--preset", spec.preset, "--host", host]


def _open_log(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def launch_endpoint(
    spec: EndpointSpec, log_path: Path, command: Callable[[EndpointSpec], Sequence[str]] = serve_command
) -> ChildProcess:
    argv = list(command(spec))
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpu
    # A full disk or an unusable state directory must not stop mining: the endpoint then runs
    # with its output discarded, and the supervisor reports why (Supervisor.problems).
    fd: int | None = None
    log_error = None
    try:
        fd = _open_log(log_path)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"\n=== gen404-console {stamp}: {' '.join(argv)}\n".encode())
    except OSError as exc:
        if fd is not None:
            os.close(fd)
            fd = None
        log_error = f"{spec.name}: cannot write its log {log_path} ({exc.strerror or exc}); output discarded"
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd if fd is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the console's terminal does not reach it
            close_fds=True,
        )
    finally:
        if fd is not None:
            os.close(fd)
    return ChildProcess(popen, log_error)


# ---------------------------------------------------------------- state


@dataclass
class ManagedEndpoint:
    spec: EndpointSpec
    log_path: Path
    status: Status = Status.STOPPED
    process: ProcessHandle | None = None
    restarts: int = 0
    quick_crashes: int = 0
    started_at: float | None = None  # supervisor clock
    restart_due: float | None = None
    health_failures: int = 0
    ever_healthy: bool = False
    probe: Probe | None = None
    message: str = ""
    adopted: bool = False
    external: bool = False  # watch only: nothing to spawn or restart

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class EndpointView:
    """What the UI shows for one endpoint: a plain immutable snapshot."""

    name: str
    port: int
    gpu: str | None
    preset: str
    status: str
    pid: int | None
    uptime_s: float | None
    restarts: int
    queue: int | None
    in_flight: int | None
    done: int | None
    failed: int | None
    last_s: float | None
    mean_s: float | None
    p95_s: float | None
    per_hour: float | None
    message: str
    log_path: str
    adopted: bool = False
    device: str | None = None
    progress: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Prober(Protocol):
    async def probe(self, port: int) -> Probe: ...

    async def set_preset(self, port: int, name: str) -> dict[str, Any]: ...


Launcher = Callable[[EndpointSpec, Path], ProcessHandle]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


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
        self.on_event: Callable[[str], None] | None = None  # human-readable events for the UI

    # -- bookkeeping
    def _event(self, text: str) -> None:
        if self.on_event:
            self.on_event(text)

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

    @staticmethod
    def _status_from_health(ep: ManagedEndpoint, probe: Probe) -> Status:
        health = probe.health or {}
        state = str(health.get("status", "")).lower()
        ep.message = ("watching: " if ep.external else "") + str(health.get("message") or "")
        if state == "loading":
            return Status.LOADING
        if state == "error":
            return Status.UNHEALTHY
        busy = (probe.summary.in_flight or 0) > 0 or (probe.summary.queue or 0) > 0
        if state == "busy" or (state == "ready" and busy):
            return Status.BUSY
        if state == "ready":
            return Status.READY
        return Status.UNHEALTHY

    async def set_preset(self, port: int, name: str) -> dict[str, Any]:
        ep = self.endpoints[port]
        if not ep.running and not ep.external:
            raise EndpointError(f"{ep.spec.name} is {ep.status.value}: start it first")
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
        items = []
        for ep in self.endpoints.values():
            if ep.external or ep.process is None or ep.process.poll() is not None:
                continue
            items.append(
                {
                    "port": ep.port,
                    "preset": ep.spec.preset,
                    "gpu": ep.spec.gpu,
                    "pid": ep.process.pid,
                    "start_ticks": ep.process.start_ticks,
                    "log_path": str(ep.log_path),
                    "restarts": ep.restarts,
                }
            )
        try:
            self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "endpoints": items}, fh, indent=1)
            tmp.replace(self.state_file)
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
                    queue=summary.queue,
                    in_flight=summary.in_flight,
                    done=summary.done,
                    failed=summary.failed,
                    last_s=summary.last_s,
                    mean_s=summary.mean_s,
                    p95_s=summary.p95_s,
                    per_hour=summary.per_hour,
                    message=ep.message,
                    log_path=str(ep.log_path),
                    adopted=ep.adopted or ep.external,
                    device=health.get("device"),
                    progress=health.get("progress"),
                )
            )
        return out

    async def run(
        self, refresh: Callable[[], float], on_update: Callable[[list[EndpointView]], None]
    ) -> None:
        """Supervise until shutdown(): exits/restarts every <=0.5 s, probes every `refresh` s.

        `on_update` gets fresh views after each probe round and after anything changed (an
        exit, a restart, an action that woke the loop); idle wake-ups cost a few poll() calls.
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
                on_update(self.views())
            wake_at = min(last_probe + refresh(), self.clock() + 0.5)
            due = self.next_due()
            if due is not None:
                wake_at = min(wake_at, due)
            self._wake.clear()
            woken = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wake_at - self.clock()))
                woken = True


def read_state(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    items = data.get("endpoints") if isinstance(data, dict) else None
    return [i for i in items or [] if isinstance(i, dict) and "port" in i and "pid" in i]
