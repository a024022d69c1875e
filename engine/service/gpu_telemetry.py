"""GET /gpu: this box's GPU telemetry through NVML, torch-free.

A console watching a remote `gen404 serve` reads the remote box's GPUs here, in the same field
names as its own local sampler, because it is the same sampler (engine/nvml_sampling.py,
`GpuSnapshot.to_dict()`): `error`, `driver`, `taken_at`, `gpus: [{index, name, util, mem_used,
mem_total, temp, power, power_limit, sm_clock, fan, clock_events}]`. Each field is null when NVML
cannot read it; no driver (a CPU box) gives `gpus: []` and an `error` sentence, never a failure.
Per-process figures are left out: the remote box's pids mean nothing to the console.

The NVML module is `pynvml` unless GEN404_NVML_MODULE names another importable module with the
same calls (tests point it at a fake that a real `gen404 serve` subprocess then samples).
"""

from __future__ import annotations

import threading
from typing import Any

from engine.nvml_sampling import NvmlSampler


class GpuTelemetry:
    """Initialises NVML on the first request; `sample()` is safe from any thread."""

    def __init__(self, nvml: Any = None) -> None:
        # no per-process reads and one sample of history: /gpu serves the current figures only
        self._sampler = NvmlSampler(nvml=nvml, history=1, processes=False)
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        with self._lock:  # requests run in worker threads; the sampler keeps state between reads
            snap = self._sampler.sample().to_dict()
        for gpu in snap["gpus"]:
            gpu.pop("processes", None)
        return snap
