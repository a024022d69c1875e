"""Short GIL turns while a preset builds beside the one that serves.

A generation on a GPU keeps giving the GIL away for a moment: CUDA-graph replays, syncs and
device-to-host copies release it while the driver works. Beside a thread running Python without
pause (torch.compile's tracing and code generation, a switch's warm-up), each release hands the
GIL to that thread, and the generation gets it back only when the interpreter forces a switch,
after `sys.getswitchinterval()`: 5 ms by default, paid again at every release of every step.
benchmarks/probes/gil_convoy.py models it: 12.8x slower beside a busy thread at 5 ms, 1.7x at
0.2 ms (CPU dev box). On an H200 a request answered beside the compile took 22-42 s at 5 ms
(session 7) against 8.8-11 s at 0.2 ms (session 5), 3.4 s alone (docs/benchmarks.md).
So while a build runs beside serving, the interval is 0.2 ms; it goes back when the last ends.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BESIDE_SERVING_S = 0.0002

_lock = threading.Lock()
_builds = 0
_saved = sys.getswitchinterval()


@contextmanager
def short_gil_turns() -> Iterator[None]:
    """Run the block with short GIL turns (nested and concurrent blocks share one setting)."""
    global _builds, _saved
    with _lock:
        if _builds == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(BESIDE_SERVING_S)
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1
            if _builds == 0:
                sys.setswitchinterval(_saved)


__all__ = ["BESIDE_SERVING_S", "short_gil_turns"]
