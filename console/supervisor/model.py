"""The supervisor's data types: endpoint status, back-off policy, the managed record and its UI view.

Plain dataclasses and Protocols only (no processes, no I/O), so the UI and tests can import them cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from console.config import EndpointSpec
from console.endpoint_client import Probe, StatsSummary


class Status(str, Enum):
    STARTING = "starting"
    LOADING = "loading"
    WARMING = "warming"  # answering uncompiled while the compiled state builds
    READY = "ready"
    BUSY = "busy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERRORED = "errored"


def status_from_health(health: dict[str, Any], summary: StatsSummary) -> Status:
    """An answering endpoint's Status from its /health and /stats (this box's or another's)."""
    state = str(health.get("status", "")).lower()
    if state == "loading":
        return Status.LOADING
    if state == "warming":
        return Status.WARMING
    if state == "busy" or (state == "ready" and summary.busy):
        return Status.BUSY
    if state == "ready":
        return Status.READY
    return Status.UNHEALTHY  # "error", or anything unknown


RUNNING_STATES = {
    Status.STARTING,
    Status.LOADING,
    Status.WARMING,
    Status.READY,
    Status.BUSY,
    Status.UNHEALTHY,
}


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


class ProcessHandle(Protocol):
    pid: int
    start_ticks: int | None
    started_wall: float

    def poll(self) -> int | None:
        """None while running, else the exit code (-signal; -1 when unknown)."""

    def signal(self, sig: int) -> None: ...


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
    quick_crashes: int = 0  # crashes in a row, each soon after a start (alerts: crash-looping)
    host: str | None = None  # another box's endpoint (console/remote.py); None = this machine
    max_batch: int | None = None  # jobs run at once (1 = one at a time); None = not reported
    image_prompts: int | None = None  # image tasks the endpoint refused (text-only preset)

    @property
    def key(self) -> str:
        """Unique among local and remote rows: "10006" here, "10.0.0.5:10006" on another box."""
        return str(self.port) if self.host is None else f"{self.host}:{self.port}"

    @property
    def remote(self) -> bool:
        return self.host is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Prober(Protocol):
    async def probe(self, port: int) -> Probe: ...

    async def set_preset(self, port: int, name: str) -> dict[str, Any]: ...


Launcher = Callable[[EndpointSpec, Path], ProcessHandle]


# ---------------------------------------------------------------- what the supervisor publishes


@dataclass(frozen=True)
class SupervisorNotice:
    """A human-readable event: spawned, crashed, restarted, a file it cannot write."""

    text: str


@dataclass(frozen=True)
class EndpointsChanged:
    """Fresh views of every endpoint, and the standing problems (files it cannot write).

    `seq` counts publications (1, 2, ...): a listener that also reads `Supervisor.views()`
    directly drops events numbered at or below `Supervisor.views_published` at that read."""

    views: tuple[EndpointView, ...]
    problems: tuple[str, ...] = ()
    seq: int = 0


SupervisorEvent = SupervisorNotice | EndpointsChanged
