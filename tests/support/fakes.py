"""Fakes of outside systems for the tests: NVML (the GPU driver library) as pynvml shows it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Enough of pynvml for engine.nvml_sampling.NvmlSampler, with failures switchable mid-run.

    `fail` names calls that raise (e.g. {"temp", "power"}); `lost = True` makes every call raise,
    as when the driver goes away (Xid, GPU fallen off the bus, driver reload); `init_error` fails
    nvmlInit as a machine without the driver does. `calls` counts every call.
    The readings are attributes a test may change between samples: `temp`, `mem_used`,
    `clock_mask` (clocks-event reason bits), `processes` (pid -> used bytes, or None for
    NVML_VALUE_NOT_AVAILABLE) and `process_util` (pid -> SM %; samples newer than the caller's
    timestamp, NOT_FOUND when none is, as NVML answers).
    """

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, count: int = 1, fail: set[str] | None = None, init_error: bool = False) -> None:
        self.count = count
        self.fail = fail or set()
        self.init_error = init_error
        self.util = 50
        self.shutdowns = 0
        self.lost = False
        self.calls = 0
        self.temp = 61
        self.mem_used = 40 * 2**30
        self.clock_mask = 0x4  # sw power cap
        self.processes: dict[int, int | None] = {}
        self.process_util: dict[int, int] = {}
        self._util_stamp = 0

    def _check(self, name: str) -> None:
        self.calls += 1
        if self.lost:
            raise FakeNVMLError("NVML_ERROR_GPU_IS_LOST")
        if name in self.fail:
            raise FakeNVMLError(f"{name}: Not Supported")

    def nvmlInit(self) -> None:  # noqa: N802
        if self.init_error:
            raise FakeNVMLError("NVML Shared Library Not Found")
        self._check("init")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._check("driver")
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check("count")
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        self._check("handle")
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        self._check("name")
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:  # noqa: N802
        self._check("util")
        return SimpleNamespace(gpu=self.util, memory=30)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        self._check("mem")
        return SimpleNamespace(used=self.mem_used, total=80 * 2**30, free=80 * 2**30 - self.mem_used)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        self._check("temp")
        return self.temp

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
        return self.clock_mask

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:  # noqa: N802
        self._check("processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes.items()]

    def nvmlDeviceGetProcessUtilization(self, h: int, last_seen: int) -> list[Any]:  # noqa: N802
        self._check("process_util")
        self._util_stamp += 1_000_000  # one second later (microseconds), per read
        if not self.process_util or self._util_stamp <= last_seen:
            raise FakeNVMLError("NVML_ERROR_NOT_FOUND")
        return [
            SimpleNamespace(pid=pid, timeStamp=self._util_stamp, smUtil=sm, memUtil=0)
            for pid, sm in self.process_util.items()
        ]
