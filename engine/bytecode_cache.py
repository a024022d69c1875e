"""Python bytecode for the libraries an endpoint imports, kept under the warm cache when Python
cannot keep it beside their sources.

Why: Python caches each module's compiled bytecode in __pycache__ beside its source, but not
with PYTHONDONTWRITEBYTECODE set (common in Docker images) or a read-only install, and some
installers (uv, by default) ship none. Then every start compiles torch, diffusers and
transformers again. The H200 box had both: torch in a venv with no .pyc and
PYTHONDONTWRITEBYTECODE=1. What an endpoint imports took 12.8-19.4 s there, 8.0-9.6 s with the
bytecode cached (session 14's probe).

What: when torch's bytecode is missing and Python will not write it beside the source,
`activate()` (the first thing `gen404` and the console's fork server do) points
`sys.pycache_prefix` at <warm cache>/bytecode/<python tag>, once that tree is filled, and lets
Python write there, and only there, what it compiles later. The first start fills the tree
after it is ready (`fill_later()`: a niced process compiles every module the endpoint
imported), so no start pays for it before "ready". Why not point there at once: a prefix hides
every __pycache__ beside the sources, so the first start would compile the libraries that do
have bytecode too (the H200 box: 25.1 s instead of 19.4 s).

Python checks each .pyc against its source's mtime and size: an upgraded library is compiled
again and rewritten in the tree, never run stale. GEN404_BYTECODE_CACHE=off turns all this off.

    python -X pycache_prefix=DIR -m engine.bytecode_cache fill LIST   (what fill_later runs; LIST:
                                                                      one source path a line)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import py_compile
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "GEN404_BYTECODE_CACHE"
PROBE = "torch"  # the library whose bytecode decides: the largest import, and always present
COMPLETE = "complete.json"  # written last by a fill: the tree is worth pointing at

# what activate() found
OFF = "off"  # GEN404_BYTECODE_CACHE=off
NOT_NEEDED = "not needed"  # Python caches the bytecode itself, or the user set a prefix
ACTIVE = "active"  # imports read (and write) the tree
EMPTY = "empty"  # needed, not filled yet: fill_later() fills it

_state = OFF
USAGE = "usage: python -X pycache_prefix=DIR -m engine.bytecode_cache fill LIST"


def tree() -> Path:
    from engine.warm_cache import cache_dir

    return cache_dir() / "bytecode" / sys.implementation.cache_tag


def needed(probe: str | None = None) -> bool:
    """Whether Python compiles `probe` from source at every start (and, by that sign, the other
    libraries of the same install)."""
    try:
        spec = importlib.util.find_spec(probe or PROBE)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.cached or sys.pycache_prefix is not None:
        return False  # nothing to cache, or the user chose where bytecode goes
    cached = Path(spec.cached)
    if cached.exists():
        return False
    if sys.dont_write_bytecode:
        return True
    directory = cached.parent if cached.parent.exists() else cached.parent.parent
    return not os.access(directory, os.W_OK)


def activate(probe: str | None = None) -> str:
    """Point imports at the tree when they need it and it is filled; returns what it found."""
    global _state
    if os.environ.get(ENV, "").strip().lower() in {"off", "0", "no", "false"}:
        _state = OFF
    elif sys.pycache_prefix is not None and sys.pycache_prefix == str(tree()):
        _state = ACTIVE  # a fork of a process that activated it (the console's fork server)
    elif not needed(probe):
        _state = NOT_NEEDED
    elif (tree() / COMPLETE).is_file():
        sys.pycache_prefix = str(tree())
        sys.dont_write_bytecode = False  # it writes into the tree only: the prefix is set
        _state = ACTIVE
    else:
        _state = EMPTY
    return _state


def state() -> str:
    return _state


def imported_sources() -> list[str]:
    """The source file of every module imported so far."""
    sources = set()
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if getattr(spec, "has_location", False) and isinstance(origin, str) and origin.endswith(".py"):
            sources.add(origin)
    return sorted(sources)


def fill_later() -> subprocess.Popen[bytes] | None:
    """After a start, when the tree is needed and empty: compile every module this process
    imported into it, in a niced process; returns it (None when there is nothing to do)."""
    if _state != EMPTY:
        return None
    target = tree()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("bytecode cache: cannot create %s: %s", target, exc)
        return None
    sources = imported_sources()
    listing = target / f".sources-{os.getpid()}"
    try:
        listing.write_text("\n".join(sources))
    except OSError as exc:
        log.warning("bytecode cache: cannot write in %s: %s", target, exc)
        return None
    # its own session: an endpoint stopped (its process group killed) seconds after "ready" still
    # leaves a filled tree; the list is a file, so the fill never reads a cut-off one
    process = subprocess.Popen(
        [
            sys.executable,
            "-X",
            f"pycache_prefix={target}",
            "-m",
            "engine.bytecode_cache",
            "fill",
            str(listing),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log.info("bytecode cache: compiling %d modules into %s for the next start", len(sources), target)

    def reap() -> None:
        _, err = process.communicate()
        if process.returncode != 0:
            log.warning("bytecode cache: filling %s failed: %s", target, err.decode(errors="replace")[-500:])

    threading.Thread(target=reap, name="gen404-bytecode-fill", daemon=True).start()
    return process


def fill(sources: list[str], target: Path) -> int:
    """Compile `sources` under the prefix this process runs with (`target`), then mark the tree
    complete. Returns how many compiled."""
    started = time.perf_counter()
    done = 0
    for source in sources:
        try:
            py_compile.compile(source, doraise=True)
            done += 1
        except (py_compile.PyCompileError, OSError):  # a file that does not compile, or is gone: skipped
            continue
    record = {"compiled": done, "of": len(sources), "seconds": round(time.perf_counter() - started, 2)}
    partial = target / f".{COMPLETE}.{os.getpid()}"
    partial.write_text(json.dumps(record))
    os.replace(partial, target / COMPLETE)
    return done


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "fill" or sys.pycache_prefix is None:
        print(USAGE, file=sys.stderr)
        return 2
    os.nice(10)  # behind the endpoint that started it
    listing = Path(argv[1])
    sources = [line for line in listing.read_text().splitlines() if line]
    fill(sources, Path(sys.pycache_prefix))
    listing.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
