"""Make torch.compile's cache keys the same in every process that compiles the same thing.

Inductor's FX-graph cache and AOTAutograd's cache key every compile by pickling its parts, the
example inputs' metadata among them. A `torch.memory_format` (torch.channels_last, ...) has no
pickling of its own: pickle looks its name up as "torch.channels_last" in the *first* loaded
module, in import order, through which that name resolves. Which module that is depends on what the
process imported first: on the H200 a plain `gen404 serve` wrote "cython.cimports.libc" into the
key and an endpoint forked from the console's fork server "torch._utils" (session 9,
`benchmarks/probes/cache_keydiff.py`). So every forked restart missed every cache entry its plain
first start had written and compiled from scratch: ready 67-107 s after a SIGKILL instead of ~25 s.

`install()` registers a pickling for memory formats by name, as torch already does for
`torch.layout` (torch/serialization.py); the cache picklers start from `copyreg.dispatch_table`,
so keys no longer depend on import order. Call it before the first compile; it is idempotent.
"""

from __future__ import annotations

import copyreg
from typing import Any

import torch


def memory_format(name: str) -> torch.memory_format:
    """The memory format named `name` ("torch.channels_last" or "channels_last")."""
    value = getattr(torch, name.rpartition(".")[2], None)
    if not isinstance(value, torch.memory_format):
        raise ValueError(f"not a torch memory format: {name!r}")
    return value


def _reduce(value: torch.memory_format) -> tuple[Any, tuple[str]]:
    return memory_format, (str(value),)


def install() -> None:
    copyreg.pickle(torch.memory_format, _reduce)


__all__ = ["install", "memory_format"]
