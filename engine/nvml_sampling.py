"""GPU sampling through NVML (nvidia-ml-py, module ``pynvml``): no Textual, no torch.

The one NVML reader of gen404: the console samples its own box with it (console/gpu.py
re-exports it) and the endpoint serves it as GET /gpu (engine/service/gpu_telemetry.py), so
both speak the same field names (`GpuSnapshot.to_dict()`).

Every field is read on its own: an NVML call that raises for one field leaves that field
``None`` (shown as N/A) and the others intact. No driver / no GPU gives a snapshot with an
``error`` message and no GPUs, never a failure. The NVML module is injectable
(``NvmlSampler(nvml=fake)``); without one it is ``pynvml``, or the importable module that
GEN404_NVML_MODULE names (tests point `gen404 serve` subprocesses at a fake), so tests need no driver.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, TypeVar

HISTORY = 60  # samples kept for the sparklines
NVML_MODULE_ENV = "GEN404_NVML_MODULE"  # another module with pynvml's calls (tests)

# NVML clocks-event ("throttle") reason bits -> short names (nvidia-smi -q wording, shortened)
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x0000000000000001, "idle"),
    (0x0000000000000002, "app-clocks"),
    (0x0000000000000004, "sw-power-cap"),
    (0x0000000000000008, "hw-slowdown"),
    (0x0000000000000010, "sync-boost"),
    (0x0000000000000020, "sw-thermal"),
    (0x0000000000000040, "hw-thermal"),
    (0x0000000000000080, "hw-power-brake"),
    (0x0000000000000100, "display-clocks"),
)

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessUsage:
    """One process's share of a GPU from NVML's per-process accounting; None = not reported."""

    mem_bytes: int | None = None  # nvmlDeviceGetComputeRunningProcesses usedGpuMemory
    sm_util: float | None = None  # % of the SMs, nvmlDeviceGetProcessUtilization (recent samples)


@dataclass
class GpuSample:
    index: int
    name: str | None = None
    util: float | None = None  # %
    mem_used: int | None = None  # bytes
    mem_total: int | None = None  # bytes
    temp: float | None = None  # deg C
    power: float | None = None  # W
    power_limit: float | None = None  # W
    sm_clock: int | None = None  # MHz
    fan: float | None = None  # %
    clock_events: list[str] | None = None  # active clocks-event reasons; [] = none
    util_history: list[float] = field(default_factory=list)
    mem_history: list[float] = field(default_factory=list)  # % of total
    processes: dict[int, ProcessUsage] | None = None  # pid -> usage; None when NVML cannot list them

    @property
    def mem_percent(self) -> float | None:
        if self.mem_used is None or not self.mem_total:
            return None
        return 100.0 * self.mem_used / self.mem_total


@dataclass
class GpuSnapshot:
    gpus: list[GpuSample]
    error: str | None = None  # set when NVML is unusable (no driver, no library)
    driver: str | None = None
    taken_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "driver": self.driver,
            "taken_at": self.taken_at,
            "gpus": [
                {k: v for k, v in asdict(g).items() if k not in ("util_history", "mem_history")}
                for g in self.gpus
            ],
        }


def decode_clock_events(mask: int) -> list[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSampler:
    """Samples all GPUs; call from a worker thread (NVML calls block briefly)."""

    def __init__(
        self, nvml: ModuleType | Any | None = None, history: int = HISTORY, processes: bool = True
    ) -> None:
        self._nvml = nvml
        self._history = history
        self._with_processes = processes  # False: skip NVML's per-process reads (GET /gpu)
        self._initialised = False
        self._error: str | None = None
        self._driver: str | None = None
        self._util: dict[int, deque[float]] = {}
        self._mem: dict[int, deque[float]] = {}
        self._proc_seen: dict[int, int] = {}  # GPU -> newest per-process utilisation timestamp (us)
        self._proc_util: dict[int, dict[int, float]] = {}  # GPU -> pid -> last SM % (kept between samples)

    def _module(self) -> Any:
        if self._nvml is None:
            self._nvml = importlib.import_module(os.environ.get(NVML_MODULE_ENV) or "pynvml")  # nvidia-ml-py
        return self._nvml

    def _init(self) -> bool:
        if self._initialised:
            return True
        try:
            nvml = self._module()
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ImportError
            self._error = f"NVIDIA driver not available ({type(exc).__name__}: {exc})"
            return False
        self._initialised = True
        self._error = None
        self._driver = self._field(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        return True

    @staticmethod
    def _field(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception:
            return None

    def device_count(self) -> int:
        if not self._init():
            return 0
        count = self._field(self._module().nvmlDeviceGetCount)
        return int(count or 0)

    @property
    def error(self) -> str | None:
        return self._error

    def sample(self) -> GpuSnapshot:
        if not self._init():
            return GpuSnapshot(gpus=[], error=self._error)
        nvml = self._module()
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            return GpuSnapshot(gpus=[], error=f"NVML cannot count devices ({exc})", driver=self._driver)
        if count == 0:
            return GpuSnapshot(gpus=[], error="no NVIDIA GPU found by NVML", driver=self._driver)
        return GpuSnapshot(gpus=[self._sample_one(nvml, i) for i in range(count)], driver=self._driver)

    def _sample_one(self, nvml: Any, index: int) -> GpuSample:
        f = self._field
        s = GpuSample(index=index)
        handle = f(lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        if handle is None:
            return s
        s.name = f(lambda: _text(nvml.nvmlDeviceGetName(handle)))
        s.util = f(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        mem = f(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        if mem is not None:
            s.mem_used = f(lambda: int(mem.used))
            s.mem_total = f(lambda: int(mem.total))
        s.temp = f(lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
        s.power = f(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        s.power_limit = f(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)
        s.sm_clock = f(lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
        s.fan = f(lambda: float(nvml.nvmlDeviceGetFanSpeed(handle)))
        s.clock_events = f(lambda: decode_clock_events(int(self._clock_event_mask(nvml, handle))))
        if self._with_processes:
            s.processes = self._processes(nvml, handle, index)
        s.util_history = self._push(self._util, index, s.util)
        s.mem_history = self._push(self._mem, index, s.mem_percent)
        return s

    def _processes(self, nvml: Any, handle: Any, index: int) -> dict[int, ProcessUsage] | None:
        """pid -> memory and SM share. Memory comes from the running-process list; utilisation
        from the samples NVML kept since the last read (not every GPU or driver offers it: the
        processes then show memory only)."""
        procs = self._field(lambda: list(nvml.nvmlDeviceGetComputeRunningProcesses(handle)))
        if procs is None:
            return None
        mem: dict[int, int | None] = {}
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            mem[int(p.pid)] = int(used) if isinstance(used, int) else None  # None: NVML_VALUE_NOT_AVAILABLE
        fresh: dict[int, tuple[int, float]] = {}
        samples = self._field(
            lambda: list(nvml.nvmlDeviceGetProcessUtilization(handle, self._proc_seen.get(index, 0)))
        )
        for u in samples or []:  # NVML raises NOT_FOUND when no sample is newer: nothing fresh
            stamp = int(u.timeStamp)
            if int(u.pid) not in fresh or stamp >= fresh[int(u.pid)][0]:
                fresh[int(u.pid)] = (stamp, float(u.smUtil))
            self._proc_seen[index] = max(self._proc_seen.get(index, 0), stamp)
        # a process with no fresh sample keeps its last figure while it still runs
        util = {pid: v for pid, v in self._proc_util.get(index, {}).items() if pid in mem}
        util.update({pid: v for pid, (_, v) in fresh.items()})
        self._proc_util[index] = util
        return {pid: ProcessUsage(mem.get(pid), util.get(pid)) for pid in sorted(set(mem) | set(util))}

    @staticmethod
    def _clock_event_mask(nvml: Any, handle: Any) -> int:
        reader = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if reader is None:
            reader = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(reader(handle))

    def _push(self, store: dict[int, deque[float]], index: int, value: float | None) -> list[float]:
        history = store.setdefault(index, deque(maxlen=self._history))
        if value is not None:
            history.append(value)
        return list(history)

    def close(self) -> None:
        if self._initialised:
            self._field(self._module().nvmlShutdown)
            self._initialised = False


def cuda_gpu_count(nvml: Any | None = None) -> tuple[int, str | None]:
    """(count, error) from NVML, not torch: used to pick the default preset."""
    sampler = NvmlSampler(nvml=nvml)
    count = sampler.device_count()
    error = sampler.error
    sampler.close()
    return count, error
