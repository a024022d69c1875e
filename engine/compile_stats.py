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
# dynamo's timed stages -> the name reported (seconds summed over the build)
STAGE_TIMES = {
    "_compile.compile_inner": "total_s",
    "bytecode_tracing": "tracing_s",
    "create_aot_dispatcher_function": "aot_autograd_s",
    "GraphLowering.codegen": "inductor_codegen_s",
    "async_compile.wait": "kernel_compile_wait_s",
}


def snapshot() -> dict[str, float]:
    """The counters and stage seconds so far in this process ({} before torch._dynamo is imported:
    nothing was compiled)."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return {}
    counters = getattr(utils, "counters", {})
    times = getattr(utils, "compilation_time_metrics", {})
    figures: dict[str, float] = {}
    for (group, counter), name in CACHE_COUNTERS.items():
        figures[name] = float(counters.get(group, {}).get(counter, 0))
    for stage, name in STAGE_TIMES.items():
        figures[name] = float(sum(times.get(stage, ())))
    return figures


def since(before: dict[str, float]) -> dict[str, Any] | None:
    """What changed since `before` (a snapshot): counts as ints, seconds rounded; None when
    nothing was compiled in between."""
    after = snapshot()
    delta = {name: value - before.get(name, 0.0) for name, value in after.items()}
    if not any(delta.values()):
        return None
    return {name: round(value, 2) if name.endswith("_s") else int(value) for name, value in delta.items()}


def describe(stats: dict[str, Any] | None) -> str:
    """One log line: 'compile 12.3 s (tracing 5.1, AOTAutograd 4.0, codegen 0.0); FX graphs 6 hit
    / 0 missed; AOTAutograd 3 hit / 0 missed'."""
    if not stats:
        return "nothing compiled"
    return (
        f"compile {stats['total_s']} s (tracing {stats['tracing_s']}, AOTAutograd "
        f"{stats['aot_autograd_s']}, inductor codegen {stats['inductor_codegen_s']}, kernel wait "
        f"{stats['kernel_compile_wait_s']}); FX graphs {stats['fx_graph_hits']} hit / "
        f"{stats['fx_graph_misses']} missed; AOTAutograd {stats['aot_autograd_hits']} hit / "
        f"{stats['aot_autograd_misses']} missed; {stats['graphs']} graphs"
    )


__all__ = ["CACHE_COUNTERS", "STAGE_TIMES", "describe", "since", "snapshot"]
