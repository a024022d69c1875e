"""Helpers for the reliability suite (faults, load, hostile input, security): presets sized for
a CPU box, /proc readers, a supervisor running on its own thread (NVML fake: tests/support/fakes.py).

Servers are started with tests/support/server.py (`running_server`); nothing here opens a
socket other than 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from console.endpoint_client import EndpointClient
from console.supervisor import (
    BackoffPolicy,
    Launcher,
    ManagedEndpoint,
    Status,
    Supervisor,
    SupervisorEvent,
    SupervisorNotice,
    launch_endpoint,
    proc_alive,
)

T = TypeVar("T")

# A unique, greppable secret: no log line, /stats answer or error body may ever contain it.
API_KEY = "rel-secret-" + os.urandom(12).hex()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUEUE = 4
VALIDATOR_BODY_LIMIT = 1024 * 1024  # the shared validation service runs with --max-body-mb 1
MIN_SPLATS = 7000  # the validator's gate; the tiny presets keep min_output_gaussians at 7000

# One optimisation step on a few points: a full request costs ~0.1 s on a 2-core CPU box, and the
# export still grows to 7000 Gaussians, so every answer is a valid (if meaningless) result.
TINY_PRESET = """\
extends: smoke
description: "reliability suite: 1 step, 100 points (export still grows to 7000 splats)"
iters: 1
num_pts: 100
max_gaussians: 200
render_size: 16
ref_size: 16
densification_interval: 100
density_start_iter: 100
density_end_iter: 100
"""
# Same models (so a switch needs no reload) but a generation that never ends on its own: the
# crash tests kill it mid-generation.
SLOW_PRESET = """\
extends: tiny
description: "reliability suite: a generation that runs until it is killed"
iters: 100000
"""
ALT_PRESET = """\
extends: tiny
description: "reliability suite: a second preset to switch to"
guidance_scale: 30
"""


def write_presets(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("tiny", TINY_PRESET), ("slow", SLOW_PRESET), ("alt", ALT_PRESET)):
        (directory / f"{name}.yaml").write_text(text)
    return directory


# ---------------------------------------------------------------- /proc


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc/<pid>/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket LISTENing on `port` (from /proc/net/tcp*)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                addr_hex, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port and len(addr_hex) == width:
                    found.add(_proc_addr(addr_hex))
    return found


def _proc_addr(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # each 32-bit word little-endian
    import ipaddress

    return str(ipaddress.IPv6Address(b"".join(words)))


def wait_for(predicate: Callable[[], T], timeout: float, step: float = 0.05, what: str = "") -> T:
    """Poll until predicate() is truthy (returns it) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(step)


def signal_if_alive(pid: int, start_ticks: int | None, sig: int) -> None:
    """Signal a process only if it is still the one we started (pid + start time match)."""
    if proc_alive(pid, start_ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# ---------------------------------------------------------------- a supervisor on its own thread


class SupervisorThread:
    """The console's real Supervisor (real launcher, real HTTP prober) on a background event loop.

    Tests read its state from their own thread and drive faults with real signals; every process
    it ever spawned is SIGCONT'ed and SIGKILLed on close().
    """

    def __init__(
        self,
        log_dir: Path,
        state_file: Path | None,
        refresh: float = 0.5,
        policy: BackoffPolicy | None = None,
        launcher: Launcher = launch_endpoint,
        **kwargs: Any,
    ) -> None:
        self.events: list[tuple[float, str]] = []
        self.spawned: list[tuple[int, int | None]] = []  # (pid, start ticks) of every process
        self._refresh = refresh

        def tracking_launcher(spec: Any, log_path: Path) -> Any:
            proc = launcher(spec, log_path)
            self.spawned.append((proc.pid, proc.start_ticks))
            return proc

        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name="reliability-supervisor", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.client: EndpointClient = self.call(self._make_client())
        self.supervisor = Supervisor(
            log_dir, state_file, self.client, launcher=tracking_launcher, policy=policy, **kwargs
        )
        self.supervisor.changes.subscribe(self._record_notice)
        self._task = asyncio.run_coroutine_threadsafe(self.supervisor.run(lambda: self._refresh), self._loop)

    def _record_notice(self, event: SupervisorEvent) -> None:
        if isinstance(event, SupervisorNotice):
            self.events.append((time.monotonic(), event.text))

    async def _make_client(self) -> EndpointClient:
        return EndpointClient()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the supervisor's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add(self, spec: Any) -> ManagedEndpoint:
        async def add() -> ManagedEndpoint:
            return self.supervisor.add(spec)

        return self.call(add())

    def endpoint(self, port: int) -> ManagedEndpoint:
        return self.supervisor.endpoints[port]

    def wait_status(self, port: int, statuses: set[Status], timeout: float) -> ManagedEndpoint:
        ep = self.endpoint(port)
        wait_for(lambda: ep.status in statuses, timeout, what=f"{ep.spec.name} in {statuses} ({ep.message})")
        return ep

    def close(self) -> None:
        try:
            if self._thread.is_alive():
                with contextlib.suppress(Exception):
                    self.call(self.supervisor.shutdown(stop_endpoints=True), timeout=20)
                with contextlib.suppress(Exception):
                    self._task.result(5)
                with contextlib.suppress(Exception):
                    self.call(self.client.aclose(), timeout=5)
        finally:
            for pid, ticks in self.spawned:  # frozen or leftover: never leave one behind
                signal_if_alive(pid, ticks, signal.SIGCONT)
                signal_if_alive(pid, ticks, signal.SIGKILL)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# ---------------------------------------------------------------- figures


class Figures:
    """Numbers measured by the tests; written as JSON when GEN404_RELIABILITY_FIGURES names a file
    (benchmarks/reliability_figures.py runs the suite that way and prints them)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def record(self, name: str, value: Any) -> None:
        self.values[name] = round(value, 4) if isinstance(value, float) else value
