"""Helpers for the console tests (imported by conftest and the test modules)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from helpers_server import free_port

from console.config import EndpointSpec

FAKE_ENDPOINT = Path(__file__).with_name("fake_endpoint.py")


def free_port_range(n: int) -> int:
    """A first port with n free ports after it (ephemeral range, checked)."""
    for _ in range(50):
        base = free_port()
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def fake_command(spec: EndpointSpec, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE_ENDPOINT), "--port", str(spec.port), "--preset", spec.preset, *extra]


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------- fake NVML


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Enough of pynvml for NvmlSampler. `fail` names methods that raise; `init_error` fails init."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, count: int = 1, fail: set[str] | None = None, init_error: bool = False) -> None:
        self.count = count
        self.fail = fail or set()
        self.init_error = init_error
        self.util = 50
        self.shutdowns = 0

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise FakeNVMLError(f"{name}: Not Supported")

    def nvmlInit(self) -> None:  # noqa: N802
        if self.init_error:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        self._check("name")
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:  # noqa: N802
        self._check("util")
        return SimpleNamespace(gpu=self.util, memory=30)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        self._check("mem")
        return SimpleNamespace(used=40 * 2**30, total=80 * 2**30, free=40 * 2**30)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        self._check("temp")
        return 61

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        self._check("power")
        return 312_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:  # noqa: N802
        self._check("power_limit")
        return 700_000

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:  # noqa: N802
        self._check("sm_clock")
        return 1980

    def nvmlDeviceGetFanSpeed(self, h: int) -> int:  # noqa: N802
        self._check("fan")
        return 30

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:  # noqa: N802
        self._check("clock_events")
        return 0x4  # sw power cap


# ---------------------------------------------------------------- Pilot helpers


async def wait_until(pilot: Any, predicate: Any, timeout: float = 20.0, step: float = 0.1) -> None:
    """Let the app run until predicate() is true; fail with the predicate's source on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            if os.environ.get("CONSOLE_TEST_TIMING"):
                print(f"waited {timeout - (deadline - time.monotonic()):.2f}s")
            return
        await pilot.pause(step)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}"
    )


def screen_text(app: Any) -> str:
    """The current screen as plain text (from Textual's own SVG export; tags and escapes removed)."""
    import html
    import re

    svg = app.export_screenshot()
    body = svg[svg.find("<g class=") :]
    text = re.sub(r"<[^>]+>", "", body)
    return html.unescape(text).replace("\xa0", " ")
