"""What torch.compile did during one build: its caches' hits and misses, and where its seconds went.

Why: a compile that should load from the caches (inductor's FX graphs, AOTAutograd's entries, the
warm cache that fills them) but recompiles from scratch looks, from outside, only like a slow
start. These figures, in /health's switch record and the endpoint's log, say which it was
(docs/endpoints.md). They come from dynamo's own process-wide counters, so a build reports the
difference between a snapshot before it and one after; other compiles running meanwhile in the
same process would be counted too (an endpoint builds one preset at a time).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

# (dynamo counter group, counter) -> the name reported
CACHE_COUNTERS = {
    ("inductor", "fxgraph_cache_hit"): "fx_graph_hits",
    ("inductor", "fxgraph_cache_miss"): "fx_graph_misses",
    ("inductor", "fxgraph_cache_bypass"): "fx_graph_bypasses",
    ("aot_autograd", "autograd_cache_hit"): "aot_autograd_hits",
    ("aot_autograd", "autograd_cache_miss"): "aot_autograd_misses",
    ("aot_autograd", "autograd_cache_bypass"): "aot_autograd_bypasses",
    ("stats", "unique_graphs"): "graphs",
    ("frames", "total"): "frames",
}
# dynamo's timed stages -> the name reported (seconds summed over the build). The last two run
# outside `compile_inner`, at the first backward and the first launches: AOTAutograd compiles a
# backward graph lazily, and each new Triton kernel with several launch configs benchmarks them
# (persisted with the other artefacts, so a warm start skips both)
STAGE_TIMES = {
    "_compile.compile_inner": "total_s",
    "bytecode_tracing": "tracing_s",
    "create_aot_dispatcher_function": "aot_autograd_s",
    "GraphLowering.codegen": "inductor_codegen_s",
    "async_compile.wait": "kernel_compile_wait_s",
    "backward._backward_impl": "backward_compile_s",
    "CachingAutotuner.benchmark_all_configs": "autotune_s",
}


@dataclass(frozen=True)
class Snapshot:
    """Where dynamo's figures stood: its cache counters, and for each timed stage the list of
    timings it appends to and that list's length then."""

    counts: dict[str, float] = field(default_factory=dict)
    timings: dict[str, tuple[list[float], int]] = field(default_factory=dict)


def _dynamo_utils() -> Any:
    return sys.modules.get("torch._dynamo.utils")  # not imported yet: nothing was compiled


def snapshot() -> Snapshot:
    """The counters and stage timings so far in this process."""
    utils = _dynamo_utils()
    if utils is None:
        return Snapshot()
    counters = getattr(utils, "counters", {})
    times = getattr(utils, "compilation_time_metrics", {})
    counts = {
        name: float(counters.get(group, {}).get(counter, 0))
        for (group, counter), name in CACHE_COUNTERS.items()
    }
    timings = {stage: (times[stage], len(times[stage])) for stage in STAGE_TIMES if stage in times}
    return Snapshot(counts, timings)


def since(before: Snapshot) -> dict[str, Any] | None:
    """What was compiled since `before`: counts as ints, seconds rounded; None when nothing was.

    `torch._dynamo.reset()` (which the guidance calls when it switches compile on) empties
    dynamo's timings: a stage whose list is not the one seen at the snapshot was started again,
    and all of it is new. A counter that went down was cleared likewise: its value is taken as is.
    """
    after = snapshot()
    figures: dict[str, float] = {}
    for name, value in after.counts.items():
        previous = before.counts.get(name, 0.0)
        figures[name] = value - previous if value >= previous else value
    for stage, name in STAGE_TIMES.items():
        current = after.timings.get(stage, ([], 0))[0]
        seen = before.timings.get(stage)
        if seen is not None and current is seen[0]:
            current = current[seen[1] :]  # the same list: only what was appended since
        figures[name] = float(sum(current))
    if not any(figures.values()):
        return None
    return {name: round(value, 2) if name.endswith("_s") else int(value) for name, value in figures.items()}


def describe(stats: dict[str, Any] | None) -> str:
    """One log line: 'compile 12.3 s (tracing 5.1, AOTAutograd 4.0, codegen 0.0, ...), then
    backward compile 1.2 s, autotune 0.8 s; FX graphs 6 hit / 0 missed; AOTAutograd 3 hit / 0
    missed; 3 graphs'."""
    if not stats:
        return "nothing compiled"
    return (
        f"compile {stats['total_s']} s (tracing {stats['tracing_s']}, AOTAutograd "
        f"{stats['aot_autograd_s']}, inductor codegen {stats['inductor_codegen_s']}, kernel wait "
        f"{stats['kernel_compile_wait_s']}), then backward compile {stats['backward_compile_s']} s, "
        f"autotune {stats['autotune_s']} s; FX graphs {stats['fx_graph_hits']} hit / "
        f"{stats['fx_graph_misses']} missed; AOTAutograd {stats['aot_autograd_hits']} hit / "
        f"{stats['aot_autograd_misses']} missed; {stats['graphs']} graphs"
    )


__all__ = ["CACHE_COUNTERS", "STAGE_TIMES", "Snapshot", "describe", "since", "snapshot"]
