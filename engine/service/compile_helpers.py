"""Compile helpers: a cold torch.compile split over processes, started with the endpoint.

Why (H200, text_mv_fast, first start 100-109 s, docs/benchmarks.md): the cold compile is ~80 s of
mostly single-threaded Python (dynamo's tracing, AOTAutograd, inductor's code generation, then
the VAE encoder's backward and the new kernels' autotuning), and in the endpoint it can only start
once the weights are loaded and the uncompiled stand-in is captured (~22 s). Helper processes
started at once, one per model (`gen404 models warm --part unet|vae`), compile the UNet and the
VAE encoder side by side into inductor's disk caches (FX graphs, AOTAutograd entries, kernels,
autotuning choices), or, for an "aot" preset, into its packages (engine/guidance/aot.py). The
endpoint waits for them before its own compile, which then loads what they built, as a second
start does (jit: ~10-15 s of retracing on an H200; aot: the packages load without tracing). Meanwhile its
stand-in serves at uncompiled speed, with no compile in its own process competing for the GIL.

Only for a cold compile, in a start that serves early or in a preset switch: a compiling preset on
CUDA with nothing compiled on disk for it (jit: its warm cache does not match; aot: a warm-up has
not recorded its packages). A warm start loads in seconds; `--wait-for-compile` compiles in the
endpoint's process. A helper that fails or runs past its time costs
nothing but the wait: the endpoint compiles what is missing itself, as it did before helpers.
A helper exits when the endpoint that started it dies (it watches its parent).

Each helper loads the models, so while they run the GPU holds ~10 GB more (H200, text_mv_fast:
16.2 GiB in all at the peak, the endpoint alone ~7 GB). Two guards keep that from taking a GPU's
last memory: helpers need `NEEDS_FREE_GIB` free on the GPU when the start begins, and only one
endpoint's helpers run on a GPU at a time (a lock file per GPU; the others compile in process).

Torch-free: the endpoint only spawns and waits; the helpers import torch themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from engine.presets import COMPILE_PARTS

WAIT_S = 900.0  # a helper still compiling after this is stopped; the endpoint compiles the rest
# free GPU memory a start needs for helpers: the measured peak of an endpoint and its two helpers
# (16.2 GiB, H200, text_mv_fast) plus room for what else starts meanwhile
NEEDS_FREE_GIB = 20.0
# compile_regions presets split the models' blocks over up to this many helpers (regions.py),
# each one more process with the models loaded (~4.6 GB on the H200) and its own compile work
MAX_HELPERS = 6
HELPER_GIB = 5.0
CORES_PER_HELPER = 3

Argv = Callable[[str], Sequence[str]]  # part -> the helper's command line


def helper_argv(preset: str, device: str, random_weights: bool, regions: bool = False) -> Argv:
    """`gen404 models warm --part PART` for `preset` (`regions`: its block packages, `--regions`),
    with this Python (no shell, no user text beyond a validated preset name as one argument)."""

    def argv(part: str) -> list[str]:
        command = [sys.executable, "-m", "engine.cli", "models", "warm", "--preset", preset]
        command += ["--part", part, "--device", device]
        command += ["--random-weights"] if random_weights else []
        return command + (["--regions"] if regions else [])

    return argv


def wanted(compile_: bool, device_type: str, compiled_on_disk: bool) -> bool:
    """Whether a start should compile in helpers: a cold compile on CUDA (either backend)."""
    return compile_ and device_type == "cuda" and not compiled_on_disk


def helper_parts(regions: bool, free_bytes: int, cores: int) -> tuple[str, ...]:
    """What each helper compiles: the UNet and the VAE encoder; with compile_regions, the models'
    blocks in shards ("unet:K/N", "vae:K/N"), as many helpers as the cores (CORES_PER_HELPER
    each) and the GPU's free memory beyond NEEDS_FREE_GIB (HELPER_GIB each past two) allow."""
    spare_gib = max(free_bytes / 2**30 - NEEDS_FREE_GIB, 0.0)
    helpers = min(MAX_HELPERS, cores // CORES_PER_HELPER, 2 + int(spare_gib // HELPER_GIB))
    if not regions or helpers <= 2:
        return COMPILE_PARTS
    # the UNet's compile is the longer (session 11: its helper done 77.6-85.5 s after its spawn,
    # the VAE encoder's 59.4-67.2 s): it gets the larger half
    unet = (helpers + 1) // 2
    return (*_shards("unet", unet), *_shards("vae", helpers - unet))


def _shards(model: str, count: int) -> list[str]:
    return [model] if count == 1 else [f"{model}:{k}/{count}" for k in range(count)]


def bridge_worthwhile(free_bytes: int, cores: int) -> bool:
    """Whether a cold start of a whole-model AOT preset should serve block packages first (the
    bridge, runtime.py): only when they split over more helpers than the two whole models would.
    On an H200 (16 cores, session 13): ready in 74.4-83.1 s on five block helpers against
    89.1-96.8 s on two whole-model helpers (session 11)."""
    return len(helper_parts(True, free_bytes, cores)) > len(COMPILE_PARTS)


def memory_refusal(free_bytes: int, needs_gib: float = NEEDS_FREE_GIB) -> str | None:
    """Why the GPU's free memory is too little for helpers, or None when it is enough."""
    free_gib = free_bytes / 2**30
    if free_gib >= needs_gib:
        return None
    return f"{free_gib:.1f} GiB free on the GPU, helpers need {needs_gib:.0f}"


def gpu_lock(directory: Path, gpu: str) -> IO[bytes] | None:
    """This GPU's helper lock, held (an exclusive flock; the OS drops it if the process dies),
    or None when another endpoint's helpers hold it or it cannot be taken."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu) or "gpu"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = (directory / f"compile-helpers-{name}.lock").open("ab")
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class CompileHelpers:
    """The helper processes of one start: spawned at once, waited for, stopped with the endpoint."""

    def __init__(
        self, argv: Argv, parts: Sequence[str] = COMPILE_PARTS, lock: IO[bytes] | None = None
    ) -> None:
        self.started = time.monotonic()
        self._gpu_lock = lock  # released once every helper has ended
        self.outcomes: dict[str, str] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(compile_threads(len(parts)))}
        for part in parts:
            name = part.replace(":", "-").replace("/", "of")
            out = tempfile.TemporaryFile(prefix=f"gen404-compile-{name}-")  # noqa: SIM115 (kept until wait)
            try:
                proc = subprocess.Popen(
                    list(argv(part)), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
                )
            except OSError as exc:
                out.close()
                self.outcomes[part] = f"not started: {exc.strerror or exc}"
                continue
            self._logs[part], self._procs[part] = out, proc

    @property
    def parts(self) -> list[str]:
        return list(self._procs) + [p for p in self.outcomes if p not in self._procs]

    def running(self) -> list[str]:
        return [part for part, proc in self._procs.items() if proc.poll() is None]

    def wait(self, timeout: float = WAIT_S, poll_s: float = 0.1) -> dict[str, str]:
        """Block until every helper exits (or `timeout` passes: the rest are stopped); each
        part's outcome in a few words ("built in 52.3 s", "failed (exit 1): <its last line>"),
        timed from the spawn to its own exit."""
        deadline = time.monotonic() + timeout
        pending = dict(self._procs)
        while pending:
            for part, proc in list(pending.items()):
                code = proc.poll()
                if code is None:
                    continue
                del pending[part]
                seconds = time.monotonic() - self.started
                if code == 0:
                    self.outcomes[part] = f"built in {seconds:.1f} s"
                else:
                    self.outcomes[part] = (
                        f"failed (exit {code}) after {seconds:.1f} s: {self._last_line(part)}"
                    )
            if pending and time.monotonic() >= deadline:
                for part, proc in pending.items():
                    self._kill(proc)
                    self.outcomes[part] = f"stopped after {timeout:.0f} s"
                break
            if pending:
                time.sleep(poll_s)
        self._close_logs()
        return dict(self.outcomes)

    def stop(self) -> None:
        """Stop every helper still running (the endpoint is stopping)."""
        for proc in self._procs.values():
            self._kill(proc)
        self._close_logs()

    def describe(self) -> str:
        return ", ".join(f"{part} {outcome}" for part, outcome in self.outcomes.items())

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def _last_line(self, part: str) -> str:
        out = self._logs.get(part)
        if out is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            out.seek(max(0, out.seek(0, os.SEEK_END) - 4096))
            lines = [
                line.strip() for line in out.read().decode(errors="replace").splitlines() if line.strip()
            ]
            return lines[-1][:300] if lines else "no output"
        return ""

    def _close_logs(self) -> None:
        with self._lock:
            for out in self._logs.values():
                with contextlib.suppress(OSError):
                    out.close()
            self._logs = {}
            if self._gpu_lock is not None:
                with contextlib.suppress(OSError):
                    self._gpu_lock.close()  # closing the file drops the flock
                self._gpu_lock = None


def compile_threads(helpers: int) -> int:
    """Inductor's compile workers in each of `helpers` processes. Each process would start a
    pool as large as the machine (a Python process per worker: 80 on a 16-core box with five
    helpers); these pools share twice the cores, since a pool idles while its helper traces, and
    keep two each (CPU dev box, a tiny UNet shard: compiling 56.0 s with one, 29.6 s with two)."""
    return max(2, 2 * cores() // max(1, helpers))


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a helper: leave as soon as the process that started it is gone (a SIGKILLed endpoint
    cannot stop its helpers; an orphan would hold GPU memory for nothing)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(3)

    threading.Thread(target=watch, name="gen404-parent-watch", daemon=True).start()


__all__ = [
    "MAX_HELPERS",
    "NEEDS_FREE_GIB",
    "WAIT_S",
    "CompileHelpers",
    "bridge_worthwhile",
    "exit_with_parent",
    "gpu_lock",
    "compile_threads",
    "cores",
    "helper_argv",
    "helper_parts",
    "memory_refusal",
    "wanted",
]
