"""Console test fixtures: private XDG dirs, a fake NVML module, endpoint launchers, cleanup.

Real endpoints (`gen404 serve --preset smoke`) are used by the acceptance tests; the stdlib
fake endpoint (fake_endpoint.py) keeps the fast supervisor tests fast. Every process a test
spawns is killed in fixture teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from console.config import EndpointSpec
from console.supervisor import launch_endpoint, proc_alive, read_state

FAKE_ENDPOINT = Path(__file__).with_name("fake_endpoint.py")

# stand-in for the GPU presets: same tiny models as smoke, so switching never reloads big weights
STANDIN_PRESET = "extends: smoke\ndescription: test stand-in ({name}) with smoke's tiny models\n"


@pytest.fixture(autouse=True)
def console_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private config/state dirs and test presets for every console test."""
    monkeypatch.setenv("GEN404_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GEN404_CONFIG_DIR", str(tmp_path / "config"))
    presets = tmp_path / "presets"
    presets.mkdir()
    for name in ("text_mv_ultra_fast", "text_mv_fast", "text_mv"):
        (presets / f"{name}.yaml").write_text(STANDIN_PRESET.format(name=name))
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(presets))
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@pytest.fixture
def fake_launcher() -> Any:
    return partial(launch_endpoint, command=fake_command)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def reaper(console_env: Path) -> Iterator[list[int]]:
    """Collects pids to kill at teardown; also kills whatever the state file still lists."""
    pids: list[int] = []
    yield pids
    state = console_env / "state" / "endpoints.json"
    for item in read_state(state):
        if proc_alive(int(item["pid"]), item.get("start_ticks")):
            pids.append(int(item["pid"]))
    for pid in pids:
        kill_group(pid)


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
