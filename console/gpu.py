"""The console's GPU sampling: engine/nvml_sampling.py (torch-free, shared with the endpoint's
GET /gpu), re-exported here under the names the console has always used."""

from engine.nvml_sampling import (
    CLOCK_EVENT_REASONS,
    HISTORY,
    GpuSample,
    GpuSnapshot,
    NvmlSampler,
    ProcessUsage,
    cuda_gpu_count,
    decode_clock_events,
)

__all__ = [
    "CLOCK_EVENT_REASONS",
    "HISTORY",
    "GpuSample",
    "GpuSnapshot",
    "NvmlSampler",
    "ProcessUsage",
    "cuda_gpu_count",
    "decode_clock_events",
]
