"""Building a preset's ready state (models, warm cache, warm-up) beside the one that serves.

`build_ready()` is the one recipe for both the first start and a `PUT /preset` switch:
    loading weights (or sharing the serving preset's models) | loading cache  (overlapped)
    compiling / loading compiled packages / capturing graphs  (Generator.warmup: the first
                                  request then runs at full speed)
    saving cache                  (engine/warm_cache.py; only when something new was compiled)
It runs on the endpoint's build thread while the generation thread keeps serving the old
preset; runtime.ModelHost swaps the result in only when it is complete. `PhaseClock` is what
/health shows of it: the phase now, its elapsed time, and the seconds each finished phase took.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import compile_stats
from engine.presets import Preset

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

# the phases /health names (docs/endpoints.md)
IMPORTING = "importing libraries"  # torch, diffusers, transformers: 17.6 s of a plain start (H200 box)
LOADING_WEIGHTS = "loading weights"
SHARING_MODELS = "sharing models"
LOADING_CACHE = "loading cache"
COMPILING = "compiling"
COMPILING_IN_HELPERS = "compiling in helpers"  # a cold start's compile (compile_helpers.py)
LOADING_PACKAGES = "loading compiled packages"  # compile_backend aot, every package on disk
CAPTURING_GRAPHS = "capturing graphs"
WARMING_UP = "warming up"
SAVING_CACHE = "saving cache"


class SwitchRefused(Exception):
    """A switch refused before anything was built; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PhaseClock:
    """The phase a build is in and since when; the seconds of each finished phase, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase: str | None = None
        self._since = time.perf_counter()
        self.durations: dict[str, float] = {}

    def enter(self, phase: str | None) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.phase is not None:
                self.durations[self.phase] = self.durations.get(self.phase, 0.0) + now - self._since
            self.phase, self._since = phase, now

    def finish(self) -> None:
        self.enter(None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            elapsed = time.perf_counter() - self._since if self.phase is not None else None
            return {
                "phase": self.phase,
                "phase_elapsed_s": None if elapsed is None else round(elapsed, 2),
                "phases": {name: round(s, 2) for name, s in self.durations.items()},
            }


@dataclass
class PresetSwitch:
    """One requested switch: what it builds, where it stands, and how it ended.

    state: "building" -> "done" (swapped in) or "failed" (the old preset keeps serving).
    `future` resolves to self when the switch ends, for a PUT that waits.
    """

    target: str
    previous: str
    reloaded: bool  # new models are built (False: the serving preset's models are shared)
    clock: PhaseClock = field(default_factory=PhaseClock)
    state: str = "building"
    error: str | None = None
    status: int = 200  # the HTTP status a waiting PUT answers with
    cache: dict[str, Any] | None = None  # the new preset's warm-cache report, once known
    note: str | None = None  # how the build went when it was not the usual way
    compile: dict[str, Any] | None = None  # what torch.compile did in the build (compile_stats.py)
    # "upgrade": the whole-model packages after a start on block packages (runtime.ModelHost's
    # bridge), which a miner's switch cancels rather than waits for
    kind: str = "switch"
    cancelled: str | None = None  # why it was called off (set by another thread)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    future: concurrent.futures.Future[PresetSwitch] = field(default_factory=concurrent.futures.Future)

    def end(self, state: str, error: str | None = None, status: int = 200) -> None:
        self.state, self.error, self.status = state, error, status
        self.finished = time.perf_counter()
        self.clock.finish()
        self.future.set_result(self)

    def to_dict(self) -> dict[str, Any]:
        clock = self.clock.snapshot()
        end = self.finished if self.finished is not None else time.perf_counter()
        return {
            "target": self.target,
            "previous": self.previous,
            "kind": self.kind,
            "state": self.state,
            "reloaded": self.reloaded,
            "phase": clock["phase"],
            "phase_elapsed_s": clock["phase_elapsed_s"],
            "phases": clock["phases"],
            "elapsed_s": round(end - self.started, 2),
            "cache": self.cache,
            "note": self.note,
            "compile": self.compile,
            "error": self.error,
        }


@dataclass
class Built:
    """A preset ready to serve: its generator warmed up for every shape it runs."""

    preset: Preset
    generator: Any
    warmup_s: float
    cache: Any  # warm_cache.CacheReport, or None when the preset compiles nothing
    seconds: float
    compile: dict[str, Any] | None = None  # compile_stats.since(): caches hit, seconds by stage


def failure_status(exc: BaseException) -> int:
    """HTTP status for a failed build: 424 missing weights, 422 an invalid preset, else 500."""
    from engine.models import MissingWeightsError
    from engine.presets import PresetError

    if isinstance(exc, MissingWeightsError):
        return 424
    if isinstance(exc, PresetError):
        return 422
    return 500


CAPTURE_FAILURES = ("stream is capturing", "capture", "cudaErrorStreamCapture")


def is_capture_failure(exc: BaseException) -> bool:
    """A CUDA-graph capture that failed because of work elsewhere on the GPU (an error raised
    inside torch.cuda.graph / make_graphed_callables), as opposed to the preset itself failing."""
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, RuntimeError) and any(marker in text for marker in CAPTURE_FAILURES)


def describe_failure(exc: BaseException) -> str:
    """One line naming the cause: "CUDA out of memory: ..." rather than a class path."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if name == "OutOfMemoryError":
        name = "CUDA out of memory"
    return f"{name}: {text}" if text else name


def missing_weights(preset: Preset, random_weights: bool) -> str | None:
    """Why `preset` cannot load here (engine.models' torch-free lookup, one line), or None."""
    if random_weights:
        return None
    from engine.models import missing_weights as missing

    return missing(preset)


def warm_up(generator: Any, progress: ProgressCallback) -> float:
    """Generator.warmup() (CUDA graphs, kernels) so the first request is as fast as the rest;
    a preset with max_batch > 1 warms every batch-size bucket instead (the path it serves on).
    Generators without a warmup (test doubles) are ready as loaded."""
    warmup = getattr(generator, "warmup", None)
    if not callable(warmup):
        return 0.0
    if int(getattr(getattr(generator, "preset", None), "max_batch", 1)) > 1:
        from engine.batch_pipeline import BatchEngine  # torch-heavy: on the build thread

        return float(BatchEngine(generator).warmup(progress))
    return float(warmup(progress) or 0.0)


def build_ready(
    preset: Preset,
    device: str | None,
    make_generator: Callable[[ProgressCallback], Any],
    clock: PhaseClock,
    progress: ProgressCallback,
    use_cache: bool = True,
    shared: bool = False,
    on_cache: Callable[[Any], None] | None = None,
) -> Built:
    """Build `preset`'s ready state. `make_generator(progress)` returns a loaded generator (with
    `shared`: one on the serving preset's models). Raises whatever loading or warm-up raised;
    nothing is swapped in here. `on_cache(report)` hears the warm cache's outcome as soon as it
    is known (and again once it is saved), for /health."""
    started = time.perf_counter()
    if not shared:
        # the models' libraries first, on this thread: a phase of its own (a plain start on the
        # H200 box spent 17.6 s here), and AOT decoding below imports from them, while diffusers'
        # lazy modules are not safe to import from two threads at once
        from engine.guidance import import_builder

        clock.enter(IMPORTING)
        import_builder(preset)
    cache_box: dict[str, Any] = {}
    cache_thread: threading.Thread | None = None
    if use_cache and preset.compile and preset.compile_backend != "aot":
        # the cache is read (and handed to torch) while the weights load: both are host-bound.
        # AOT packages carry their kernels themselves (an H200 start with inductor's caches empty
        # loaded them in 1.4-3.3 s): inductor's caches would only compete for the GIL
        def load_cache() -> None:
            from engine.pipeline import resolve_device
            from engine.warm_cache import WarmCache

            cache = WarmCache(preset, resolve_device(device or preset.device))
            cache_box["cache"], cache_box["report"] = cache, cache.load()

        cache_thread = threading.Thread(target=load_cache, name="gen404-cache-load", daemon=True)
        cache_thread.start()
    packages_thread: threading.Thread | None = None
    stop_preload = threading.Event()
    if preset.compile and preset.compile_backend == "aot" and not shared:
        # AOT packages need no weights to decode: seconds hidden behind loading them
        def preload() -> None:
            from engine.guidance import aot
            from engine.pipeline import resolve_device

            aot.preload_preset(preset, resolve_device(device or preset.device), stop=stop_preload)

        packages_thread = threading.Thread(target=preload, name="gen404-aot-preload", daemon=True)
        packages_thread.start()
    clock.enter(SHARING_MODELS if shared else LOADING_WEIGHTS)
    try:
        generator = make_generator(progress)
    except BaseException:
        stop_preload.set()  # no weights, no calls: the decoding stops (not waited for: the error goes out now)
        raise
    if cache_thread is not None:
        clock.enter(LOADING_CACHE)  # only the part not hidden behind the weights
        cache_thread.join()
    report = cache_box.get("report")
    if report is not None:
        progress(1.0, f"warm cache: {report.state} ({report.detail})")
        if on_cache is not None:
            on_cache(report)
    on_cuda = str(getattr(generator, "device", "")).startswith("cuda")
    if preset.compile and not getattr(generator, "compile_failure", None):
        # either includes the capture that follows it
        from engine.guidance.aot import preset_packages_ready

        on_disk = preset_packages_ready(preset, getattr(generator, "device", "cpu"))
        clock.enter(LOADING_PACKAGES if on_disk else COMPILING)
    else:
        clock.enter(CAPTURING_GRAPHS if on_cuda else WARMING_UP)
    if packages_thread is not None:
        packages_thread.join()  # what is left of it: part of loading packages
    compiled_before = compile_stats.snapshot()
    warmup_s = warm_up(generator, progress)
    compiled = compile_stats.since(compiled_before)
    if compiled is not None:
        log.info("%s warm-up: %s", preset.name, compile_stats.describe(compiled))
    if report is not None and report.state != "hit":
        clock.enter(SAVING_CACHE)
        report.saved = cache_box["cache"].save()
        if on_cache is not None:
            on_cache(report)
    clock.finish()
    return Built(preset, generator, warmup_s, report, time.perf_counter() - started, compiled)


__all__ = [
    "Built",
    "PhaseClock",
    "PresetSwitch",
    "SwitchRefused",
    "build_ready",
    "describe_failure",
    "failure_status",
    "is_capture_failure",
    "missing_weights",
]
