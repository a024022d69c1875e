"""GET /gpu: this box's GPU telemetry through NVML (nvidia-ml-py), torch-free.

A console watching a remote `gen404 serve` reads the remote box's GPUs here, in the same field
names as its own local sampler (console/gpu.py `GpuSnapshot.to_dict()`): `error`, `driver`,
`taken_at`, `gpus: [{index, name, util, mem_used, mem_total, temp, power, power_limit,
sm_clock, fan, clock_events}]`. Each field is read on its own and is null when NVML cannot
read it; no driver (a CPU box) gives `gpus: []` and an `error` sentence, never a failure.

The NVML module is `pynvml` unless GEN404_NVML_MODULE names another importable module with the
same calls (tests point it at a fake that a real `gen404 serve` subprocess then samples).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

NVML_MODULE_ENV = "GEN404_NVML_MODULE"

# NVML clocks-event ("throttle") reason bits, named as console/gpu.py names them
_CLOCK_EVENTS = (
    (0x1, "idle"),
    (0x2, "app-clocks"),
    (0x4, "sw-power-cap"),
    (0x8, "hw-slowdown"),
    (0x10, "sync-boost"),
    (0x20, "sw-thermal"),
    (0x40, "hw-thermal"),
    (0x80, "hw-power-brake"),
    (0x100, "display-clocks"),
)


def _read(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception:  # one field NVML cannot read (Not Supported, a lost GPU): null alone
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GpuTelemetry:
    """Initialises NVML once, on the first request; `sample()` is safe from any thread."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._error: str | None = None
        self._driver: str | None = None
        self._lock = threading.Lock()

    def _init(self) -> bool:
        if self._ready or self._error is not None:
            return self._ready
        try:
            if self._nvml is None:
                self._nvml = importlib.import_module(os.environ.get(NVML_MODULE_ENV) or "pynvml")
            self._nvml.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded
            self._error = f"NVIDIA driver not available ({type(exc).__name__}: {exc})"
            return False
        self._ready = True
        driver = _read(self._nvml.nvmlSystemGetDriverVersion)
        self._driver = None if driver is None else _text(driver)
        return True

    def sample(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"error": None, "driver": None, "taken_at": time.time(), "gpus": []}
            if not self._init():
                out["error"] = self._error
                return out
            out["driver"] = self._driver
            count = _read(self._nvml.nvmlDeviceGetCount)
            if not count:
                out["error"] = "no NVIDIA GPU found by NVML" if count == 0 else "NVML cannot count devices"
                return out
            out["gpus"] = [self._one(i) for i in range(int(count))]
            return out

    def _one(self, index: int) -> dict[str, Any]:
        nvml = self._nvml
        g: dict[str, Any] = {"index": index}
        handle = _read(lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        name = None if handle is None else _read(lambda: nvml.nvmlDeviceGetName(handle))
        g["name"] = None if name is None else _text(name)
        if handle is None:
            return g
        mem = _read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        events = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )
        mask = None if events is None else _read(lambda: int(events(handle)))
        g.update(
            util=_read(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
            mem_used=None if mem is None else _read(lambda: int(mem.used)),
            mem_total=None if mem is None else _read(lambda: int(mem.total)),
            temp=_read(lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
            power=_read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            power_limit=_read(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0),
            sm_clock=_read(lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))),
            fan=_read(lambda: float(nvml.nvmlDeviceGetFanSpeed(handle))),
            clock_events=None if mask is None else [n for bit, n in _CLOCK_EVENTS if mask & bit],
        )
        return g
