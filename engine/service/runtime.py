"""The endpoint's model host: one Generator, its load state, preset switches, and faults.

Everything here that touches torch runs on the endpoint's single Worker thread (queue.py),
so loading, switching and generating never overlap. The event loop only reads the plain
attributes (status, progress, message, preset_name) for /health.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from engine import bytecode_cache
from engine.presets import Preset, PresetError, list_presets, load_preset, split_ref
from engine.service import compile_helpers
from engine.service.batcher import Batcher
from engine.service.gil_turns import short_gil_turns
from engine.service.queue import GenerationCancelled, Worker
from engine.service.switch import (
    COMPILING_IN_HELPERS,
    IMPORTING,
    Built,
    PhaseClock,
    PresetSwitch,
    ProgressCallback,
    SwitchRefused,
    build_ready,
    describe_failure,
    failure_status,
    is_capture_failure,
    missing_weights,
)

log = logging.getLogger("gen404.serve")

# warming: answering on the preset's uncompiled state while its compiled state builds beside it
Status = Literal["loading", "warming", "ready", "error"]
SERVING: tuple[Status, ...] = ("warming", "ready")
FAULT_ENV = "GEN404_FAULT_INJECT"
FAULT_NAMES = ("RuntimeError", "ValueError", "MemoryError", "OutOfMemoryError")
GeneratorFactory = Callable[[Preset, "str | None", bool], Any]


class NotReady(Exception):
    """Models are loading or failed to load; the request should come back later."""


class UnknownPreset(LookupError):
    pass


@dataclass
class Output:
    """What one generation hands back to the HTTP layer (already encoded, off the loop)."""

    data: bytes
    splats: int
    preset: str
    time_s: float  # engine time: wall time of Generator.generate (X-Generation-Time)
    timings: dict[str, float]
    gaussians: Any  # the Splats themselves, for the optional scorer hook


def _fault_types() -> dict[str, type[BaseException]]:
    import torch

    return {
        "RuntimeError": RuntimeError,
        "ValueError": ValueError,
        "MemoryError": MemoryError,
        "OutOfMemoryError": torch.cuda.OutOfMemoryError,
    }


@dataclass
class Fault:
    exception: str
    prompt_contains: str | None = None  # None: the next generation, once


def parse_faults(spec: str | None) -> dict[str, list[Fault]]:
    """Test hook GEN404_FAULT_INJECT="stage:ExceptionName[@text][,...]" (read at start-up).

    `generate:RuntimeError` makes the next generation raise, once; `generate:RuntimeError@boom`
    makes every generation whose prompt contains "boom" raise (tests stay order-independent).
    `load:RuntimeError` makes model loading fail; `switch:OutOfMemoryError` makes the next preset
    switch fail while building (`@text`: every switch to a preset whose name contains it). Exception names: RuntimeError, ValueError,
    MemoryError, OutOfMemoryError (torch.cuda's, to exercise the out-of-memory path on CPU).
    """
    faults: dict[str, list[Fault]] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        stage, _, rest = item.strip().partition(":")
        name, _, text = rest.partition("@")
        if stage not in ("generate", "load", "switch") or name not in FAULT_NAMES:
            raise ValueError(
                f"{FAULT_ENV}: cannot parse {item!r} (want generate|load|switch:ExceptionName[@text])"
            )
        faults.setdefault(stage, []).append(Fault(name, text or None))
    return faults


def _take_fault(faults: dict[str, list[Fault]], stage: str, prompt: str = "") -> BaseException | None:
    for fault in faults.get(stage, []):
        if fault.prompt_contains is None or fault.prompt_contains in prompt:
            if fault.prompt_contains is None and stage in ("generate", "switch"):
                faults[stage].remove(fault)  # one-shot
            return _fault_types()[fault.exception](f"injected {stage} fault ({FAULT_ENV})")
    return None


def default_factory(preset: Preset, device: str | None, random_weights: bool) -> Any:
    from engine.pipeline import Generator  # torch-heavy: imported on the worker thread

    # serving: no device syncs at stage edges (stage times are then host-side only)
    return Generator(preset, device=device, random_weights=random_weights, sync_timings=False)


@dataclass
class _Active:
    """The preset that serves and its warmed-up generator; replaced whole, never edited."""

    preset: Preset
    generator: Any


class ModelHost:
    """Serves one preset on the generation worker; builds the next one on a build thread.

    A switch (`switch()`) builds the new preset's state beside the serving one (switch.py) and
    swaps it in only when it is warmed up; requests meanwhile run on the old preset, and a failed
    build leaves it serving. /health's "ready" therefore always means the next request of the
    named preset runs at full speed.

    Serving early (`serve_early`, the default): a start of a compiling preset first builds the
    preset uncompiled (weights and CUDA graphs: seconds, not the minute torch.compile takes),
    answers requests on it with /health "warming", and builds the compiled state beside it as a
    switch to the same preset, swapped in when warmed up ("ready"). After a crash the endpoint so
    answers again as soon as its weights are on the GPU, at the uncompiled speed. A cold compile
    (no matching warm cache, CUDA) runs in compile helper processes first (compile_helpers.py),
    so the compile does not slow the requests answered meanwhile.

    The bridge: a cold start of a whole-model AOT preset with room for more than two helpers
    compiles its block packages first (compile_regions: five helpers on a 16-core H200 box, ready
    in 74-83 s against 89-97 s) and says "ready" on them; their generations ran 1.7% slower than
    the whole models' (bench_regions), which then compile in two helpers and are swapped in as a
    switch to the same preset. Every later start loads the whole-model packages.
    """

    def __init__(
        self,
        worker: Worker,
        preset_name: str,
        device: str | None = None,
        random_weights: bool = False,
        faults: dict[str, list[Fault]] | None = None,
        factory: GeneratorFactory = default_factory,
        use_cache: bool = True,
        serve_early: bool = True,
        use_helpers: bool = True,
    ) -> None:
        self.worker = worker
        self.builder = Worker("gen404-build")  # loading and warm-up: never on the generation thread
        self.preset_name = preset_name
        self.device_request = None if device in (None, "auto") else device
        self.device = self.device_request or "auto"
        self.random_weights = random_weights
        self.faults = {stage: list(names) for stage, names in (faults or {}).items()}
        self.factory = factory
        self.use_cache = use_cache
        self.serve_early = serve_early
        # a cold compile (a start serving early, a switch) runs in helper processes first
        self.use_helpers = use_helpers
        # (preset, device, random, regions) -> argv; tests swap it
        self.helper_argv = compile_helpers.helper_argv
        self.gpu_room = _gpu_room  # device -> (free bytes, the GPU's id); tests swap it
        self._helpers: compile_helpers.CompileHelpers | None = None
        self.status: Status = "loading"
        self.progress = 0.0
        self.message = "waiting to load models"
        self.models: str | None = None
        self.clock = PhaseClock()  # the start-up build's phases
        self.cache: dict[str, Any] | None = None  # the last build's warm-cache report
        self.switching: PresetSwitch | None = None  # the switch in progress or the last one
        self._active: _Active | None = None
        self._lock = threading.Lock()  # guards status/progress/message against torn reads
        # presets with max_batch > 1: generations share SDS steps (batcher.py)
        self.batcher = Batcher(worker, self._batch_engine, on_error=_after_failure)
        self._engine: Any = None

    @property
    def _generator(self) -> Any:
        active = self._active
        return None if active is None else active.generator

    # --- state shown by /health -------------------------------------------------------------

    def _set(self, status: Status, message: str, progress: float | None = None) -> None:
        with self._lock:
            self.status = status
            self.message = message
            if progress is not None:
                self.progress = progress

    def health(self) -> dict[str, Any]:
        with self._lock:
            info: dict[str, Any] = {
                "status": self.status,
                "preset": self.preset_name,
                "device": self.device,
                "models": self.models,
                "progress": round(self.progress, 3),
                "message": self.message,
                "max_batch": self.max_batch,
                "active": self.batcher.jobs(),
            }
        info.update(self.clock.snapshot())  # phase, phase_elapsed_s, phases (of the start)
        info["cache"] = self.cache
        info["aot"] = self._aot_reports()
        info["switch"] = None if self.switching is None else self.switching.to_dict()
        return info

    def _aot_reports(self) -> list[dict[str, Any]] | None:
        """The serving preset's AOT packages: loaded, built or rebuilt (why), and the seconds each
        took; None unless it runs on them (compile_backend aot)."""
        active = self._active
        guidance = getattr(getattr(active, "generator", None), "guidance", None)
        reports = getattr(guidance, "aot_reports", None)
        return reports() if callable(reports) else None

    @property
    def serving(self) -> bool:
        """Whether requests are taken now: ready, or warming (uncompiled, compiled state building)."""
        return self.status in SERVING and self._active is not None

    @property
    def max_batch(self) -> int:
        """Generations served at once: the serving preset's max_batch (1 until one is loaded)."""
        active = self._active
        return 1 if active is None else int(active.preset.max_batch)

    # --- loading ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the start-up preset's models in the background (health says "loading")."""
        self._set("loading", f"loading models for preset {self.preset_name}", 0.0)
        self.builder.submit(lambda: self._load(self.preset_name))

    def stop(self) -> None:
        if self._helpers is not None:
            self._helpers.stop()
        self.builder.stop()

    def _on_progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self.progress = max(0.0, min(1.0, float(fraction)))
            if message:
                self.message = message

    def _load(self, name: str, preset: Preset | None = None) -> None:
        """First start (or a start after a failed one): nothing serves until this is ready, or,
        serving early, until the uncompiled state is (then the compiled one builds beside it)."""
        self.clock = PhaseClock()
        self.clock.enter(IMPORTING)  # the checks below import torch; the build imports the models' libraries
        self.cache = None
        try:
            preset = preset or load_preset(name)
            fault = _take_fault(self.faults, "load")
            if fault is not None:
                raise fault
            early = self.serve_early and preset.compile and not self._compiled_state_on_disk(preset)
            bridge = self._bridge(preset) if early else None
            helpers = None
            if bridge is not None and self._compiled_state_on_disk(bridge):
                early = False  # its block packages load in seconds: it serves at once
            elif bridge is not None:
                helpers = self._start_helpers(bridge)
                if helpers is None:
                    bridge = None  # no helpers for it: the whole models compile as before
            if early and helpers is None:
                helpers = self._start_helpers(preset)
            serving = bridge or preset
            first = dataclasses.replace(serving, compile=False) if early else serving
            built = build_ready(
                first,
                self.device_request,
                self._fresh_generator(first),
                self.clock,
                self._on_progress,
                self.use_cache,
                on_cache=self._show_cache,
            )
        except Exception as exc:
            self.clock.finish()
            if self._helpers is not None:
                self._helpers.stop()  # nothing will use what they build
            message = f"loading preset {name!r} failed: {type(exc).__name__}: {exc}"
            self._set("error", message)
            print(f"gen404 serve: error: {message}", file=sys.stderr, flush=True)
            log.debug("load failure", exc_info=True)
            return
        if not early:
            active = self._activate(built)
            log.info("preset %s ready on %s (%s)", name, self.device, self.message)
        else:
            active = self._activate(built, "warming")
            log.info("preset %s answering uncompiled on %s; compiling beside it", name, self.device)
        bytecode_cache.fill_later()  # serving (ready, or warming): what a start imports is imported by now
        if early:
            self._compile_beside(active, serving, helpers)
        if bridge is not None:
            self._upgrade(preset)

    def _bridge(self, preset: Preset) -> Preset | None:
        """For a cold start of a whole-model AOT preset: the same preset on block packages
        (compile_regions), which compile split over more helpers and so serve sooner; the start
        serves on them, then `_upgrade` swaps the whole-model packages in. Why not serve blocks for
        good: on the H200 they ran text_mv_fast 1.7% slower (bench_regions, session 13: median
        2.164 s against 2.127 s). None when it would not help (no helpers, too few cores or GPU
        memory for more than two helpers, or no AOT here)."""
        if not (self.use_helpers and preset.compile and preset.compile_backend == "aot"):
            return None
        if preset.compile_regions:
            return None
        try:
            from engine.guidance.aot import supported as aot_supported
            from engine.pipeline import resolve_device

            device = resolve_device(self.device_request or preset.device)
            if not (aot_supported() and compile_helpers.wanted(preset.compile, device.type, False)):
                return None
            free, _gpu = self.gpu_room(device)
        except Exception as exc:  # the bridge only saves time: the start compiles as before
            log.warning("preset %s: no block-package bridge (%s)", preset.name, describe_failure(exc))
            return None
        if not compile_helpers.bridge_worthwhile(free, compile_helpers.cores()):
            return None
        return dataclasses.replace(preset, compile_regions=True)

    def _cancel_upgrade(self, ticket: PresetSwitch, target: str) -> None:
        """A miner's switch goes first: the whole-model build waiting on its helpers stops (the
        next start builds it again); past the helpers it finishes, and the switch runs after it."""
        ticket.cancelled = f"cancelled for the switch to {target!r}"
        helpers = self._helpers
        if helpers is not None:
            helpers.stop()
        log.info("preset %s: whole-model packages %s", ticket.target, ticket.cancelled)

    def _upgrade(self, preset: Preset) -> None:
        """After a start served on `preset`'s block packages (the bridge): its whole-model
        packages, compiled in helpers beside them (or loaded, if on disk), swapped in when warmed
        up, as a switch to the same preset. A failure keeps the block packages serving."""
        active = self._active
        if active is None or active.preset == preset or not self.serving:
            return
        ticket = PresetSwitch(preset.name, active.preset.name, reloaded=False, kind="upgrade")
        self.switching = ticket
        with self._lock:
            self.message = f"{self.message}; whole-model packages building beside the block packages"
        helpers = None if self._compiled_state_on_disk(preset) else self._start_helpers(preset)
        if ticket.cancelled and helpers is not None:  # cancelled while they were being spawned
            helpers.stop()
        self._build_switch(ticket, active, preset, shared=True, helpers=helpers)
        if ticket.state == "failed":
            serving = "block packages" if active.preset.compile else "uncompiled"  # its compile failed too
            self._set("ready", f"serving {serving}: the whole-model packages failed ({ticket.error})", 1.0)

    def _compiled_state_on_disk(self, preset: Preset) -> bool:
        """An AOT preset whose packages a past warm-up here recorded: they load in seconds, so the
        start builds the compiled state directly instead of serving early."""
        from engine.guidance.aot import preset_packages_ready
        from engine.pipeline import resolve_device

        return preset_packages_ready(preset, resolve_device(self.device_request or preset.device))

    def _start_helpers(self, preset: Preset) -> compile_helpers.CompileHelpers | None:
        """Compile helper processes for a cold compile of `preset` (compile_helpers.py says when
        and why); None when this start does not want them."""
        if not self.use_helpers or not preset.compile:
            return None
        try:
            from engine.pipeline import resolve_device
            from engine.warm_cache import WarmCache, cache_dir

            device = resolve_device(self.device_request or preset.device)
            if preset.compile_backend == "aot":
                on_disk = self._compiled_state_on_disk(preset)
            else:
                on_disk = self.use_cache and WarmCache(preset, device).matches()
            if not compile_helpers.wanted(preset.compile, device.type, on_disk):
                return None
            # a helper loads the preset by name (block by block if told): only for one that is
            # exactly its file, or the file's bridge (_bridge)
            if (
                dataclasses.replace(load_preset(preset.name), compile_regions=preset.compile_regions)
                != preset
            ):
                return None
            free, gpu = self.gpu_room(device)
            refusal = compile_helpers.memory_refusal(free)
            lock = None if refusal else compile_helpers.gpu_lock(cache_dir(), gpu)
            if lock is None:
                why = refusal or "another endpoint's compile helpers are running on this GPU"
                log.info("preset %s: cold compile in this process (%s)", preset.name, why)
                return None
            from engine.guidance.aot import supported as aot_supported

            regions = preset.compile_backend == "aot" and preset.compile_regions and aot_supported()
            argv = self.helper_argv(preset.name, device.type, self.random_weights, regions)
            parts = compile_helpers.helper_parts(regions, free, compile_helpers.cores())
            self._helpers = helpers = compile_helpers.CompileHelpers(argv, parts, lock=lock)
        except Exception as exc:  # helpers only save time: this start compiles in process instead
            log.warning("preset %s: no compile helpers (%s)", preset.name, describe_failure(exc))
            return None
        log.info("preset %s: cold compile, in helper processes (%s)", preset.name, ", ".join(helpers.parts))
        return helpers

    def _compile_beside(
        self, active: _Active, preset: Preset, helpers: compile_helpers.CompileHelpers | None = None
    ) -> None:
        """The serving-early start's second half: `preset` compiled, built beside its uncompiled
        state (`active`) on these models, swapped in when warmed up. With compile `helpers`, the
        build waits for them first, then loads what they compiled. A failed build keeps the
        uncompiled state serving, then called ready (as a compile failure at warm-up is)."""
        ticket = PresetSwitch(preset.name, preset.name, reloaded=False)
        self.switching = ticket
        self._build_switch(ticket, active, preset, shared=True, helpers=helpers)
        if ticket.state == "failed" and self.status == "warming":
            self._set("ready", f"torch.compile build failed, serving uncompiled: {ticket.error}", 1.0)

    def _show_cache(self, report: Any) -> None:
        with self._lock:
            self.cache = report.to_dict()

    def _fresh_generator(self, preset: Preset) -> Callable[[ProgressCallback], Any]:
        def make(progress: ProgressCallback) -> Any:
            generator = self.factory(preset, self.device_request, self.random_weights)
            generator.load(progress)
            return generator

        return make

    def _activate(self, built: Built, status: Status = "ready") -> _Active:
        """Swap a built preset in: the next request runs on it (one in flight finishes on the old).
        Returns what now serves."""
        generator = built.generator
        previous = self._active
        active = self._active = _Active(built.preset, generator)
        with self._lock:
            self.preset_name = built.preset.name
            self.models = _describe_models(generator, built.preset)
            self.device = str(generator.device)  # the pipeline resolved "auto"
            self.cache = None if built.cache is None else built.cache.to_dict()
        message = _ready_message(generator, built.seconds, built.warmup_s)
        if status == "warming":
            message = f"answering uncompiled, compiling beside it ({message})"
        self._set(status, message, 1.0)
        replaced = previous is not None and previous.generator is not generator
        del previous
        if replaced or status == "ready":
            # The old models (if any) go once the request still using them ends, and the
            # warm-up's cached blocks go back to the GPU: each batch bucket's eager pass leaves its
            # largest buffers cached, which nvidia-smi counts as this endpoint's (CUDA graphs keep
            # their own pools, untouched). A "warming" start skips it: its compiled swap follows.
            _release_memory()
        return active

    # --- preset switches ----------------------------------------------------------------------

    def available(self) -> list[str]:
        return list_presets()

    def switch(self, name: str) -> PresetSwitch | None:
        """Start building preset `name` beside the serving one; None when it already serves.

        Raises UnknownPreset, PresetError (malformed YAML: the old preset is kept), NotReady
        (models are loading) or SwitchRefused (weights missing: 424; another switch is being
        built: 409, except the whole-model build after a start on block packages, which this
        cancels: `_cancel_upgrade`). The returned PresetSwitch tracks the build; its `future` resolves when the
        new preset serves ("done") or the build failed ("failed", the old preset still serves).
        """
        if split_ref(name)[0] not in self.available():  # a name, or a reference "name+iters=300"
            raise UnknownPreset(name)
        preset = load_preset(name)  # PresetError propagates: nothing has changed yet
        if self.status == "loading":
            raise NotReady("models are loading")
        building = self.switching
        if building is not None and building.state == "building":
            if building.target == name:
                return building  # the same switch asked twice: wait on the one under way
            if building.kind != "upgrade":
                raise SwitchRefused(
                    409, f"a switch to {building.target!r} is being built; try again when it ends"
                )
            self._cancel_upgrade(building, name)
        missing = missing_weights(preset, self.random_weights)
        if missing:
            raise SwitchRefused(
                424, f"cannot switch to {name!r}: {missing}; still serving {self.preset_name!r}"
            )
        active = self._active
        if active is not None and active.preset == preset:
            return None
        if active is None:  # the start failed: this is a fresh start on the new preset
            self.preset_name = name
            self._set("loading", f"loading models for preset {name}", 0.0)
            ticket = PresetSwitch(name, name, reloaded=True)
            self.switching = ticket
            self.builder.submit(lambda: self._start_over(ticket, preset))
            return ticket
        shared = _can_share(active.generator, preset, self.factory, self.device_request, self.random_weights)
        ticket = PresetSwitch(name, active.preset.name, reloaded=not shared)
        self.switching = ticket
        self.builder.submit(
            lambda: self._build_switch(ticket, active, preset, shared, self._start_helpers(preset))
        )
        return ticket

    def _start_over(self, ticket: PresetSwitch, preset: Preset) -> None:
        self._load(preset.name, preset)
        if self.serving:
            ticket.end("done")
        else:
            ticket.end("failed", self.message, 500)

    def _build_switch(
        self,
        ticket: PresetSwitch,
        active: _Active,
        preset: Preset,
        shared: bool,
        helpers: compile_helpers.CompileHelpers | None = None,
    ) -> None:
        """Build `preset` beside `active` (which serves meanwhile) and swap it in when ready; with
        compile `helpers` (a cold compile), first wait for them, then load what they compiled."""
        if helpers is not None:
            ticket.clock.enter(COMPILING_IN_HELPERS)
            helpers.wait()
            ticket.note = f"compile helpers: {helpers.describe()}"
            log.info("preset %s: %s", preset.name, ticket.note)
        if ticket.cancelled:
            ticket.end("failed", f"{ticket.cancelled}; still serving {active.preset.name!r}", 409)
            return

        def make(progress: ProgressCallback) -> Any:
            fault = _take_fault(self.faults, "switch", preset.name)
            if fault is not None:
                raise fault
            if shared:
                return active.generator.fork(preset)
            return self._fresh_generator(preset)(progress)

        def quiet(_fraction: float, _message: str = "") -> None:
            pass  # the serving preset's /health message stays; the switch has its own record

        def build() -> Built:
            return build_ready(
                preset,
                self.device_request,
                make,
                ticket.clock,
                quiet,
                self.use_cache,
                shared=shared,
                on_cache=lambda report: setattr(ticket, "cache", report.to_dict()),
            )

        try:
            try:
                with short_gil_turns():  # the serving thread's requests keep their pace beside it
                    built = build()
            except Exception as exc:
                if not is_capture_failure(exc):
                    raise
                # CUDA-graph capture beside a running generation failed: build again on the
                # generation thread, between requests (they wait for it, but the switch happens)
                _release_memory()
                failure = (
                    f"built on the generation thread: capture beside it failed ({describe_failure(exc)})"
                )
                ticket.note = f"{ticket.note}; {failure}" if ticket.note else failure
                log.warning("switch to %s: %s", preset.name, ticket.note)
                built = self.worker.submit(build).result()
        except Exception as exc:
            cause = describe_failure(exc)
            status = failure_status(exc)
            _release_memory()  # whatever the failed build allocated
            message = f"switch to {preset.name!r} failed ({cause}); still serving {active.preset.name!r}"
            ticket.end("failed", message, status)
            print(f"gen404 serve: error: {message}", file=sys.stderr, flush=True)
            log.debug("switch failure", exc_info=True)
            return
        ticket.compile = built.compile
        self._activate(built)
        ticket.end("done")
        log.info(
            "preset %s active (models %s; built in %.1fs beside %s)",
            preset.name,
            "shared" if shared else "loaded",
            built.seconds,
            active.preset.name,
        )

    # --- generation (worker thread) -----------------------------------------------------------

    def _batch_engine(self) -> Any:
        """The BatchEngine for the current generator and preset (worker thread; rebuilt on a switch)."""
        from engine.batch_pipeline import BatchEngine  # torch-heavy: imported on the worker thread

        active = self._active  # read once: a swap makes the next call build the new engine
        if not self.serving or active is None:
            raise NotReady(self.message)
        engine = self._engine
        if engine is None or engine.generator is not active.generator or engine.preset is not active.preset:
            engine = self._engine = BatchEngine(active.generator, int(active.preset.max_batch), active.preset)
        return engine

    def submit(
        self, prompt: str, encode: Callable[[Any], bytes], cancel: threading.Event
    ) -> concurrent.futures.Future[Output]:
        """Hand a generation to the batcher (event loop side); the future gives its Output."""
        if not self.serving:
            raise NotReady(self.message)
        fault = _take_fault(self.faults, "generate", prompt)
        if fault is not None:
            failed: concurrent.futures.Future[Output] = concurrent.futures.Future()
            failed.set_exception(fault)
            return failed
        return self.batcher.submit(prompt, lambda result: _output(result, encode, result.total_s), cancel)

    def generate(self, prompt: str, encode: Callable[[Any], bytes], cancel: threading.Event) -> Output:
        """Run one generation and encode it; called on the worker thread only."""
        active = self._active  # read once: a swap during this request affects the next one
        if not self.serving or active is None:
            raise NotReady(self.message)
        fault = _take_fault(self.faults, "generate", prompt)

        def on_step(*_args: Any, **_kwargs: Any) -> None:
            if cancel.is_set():
                raise GenerationCancelled("generation stopped: client gone or endpoint stopping")

        started = time.perf_counter()
        try:
            if fault is not None:
                raise fault
            result = active.generator.generate(prompt, on_step=on_step)
        except Exception as exc:
            if _is_cuda_oom(exc):
                gc.collect()
                _empty_cuda_cache()  # leave the GPU usable for the next request
            raise
        # measured here: everything Generator.generate cost
        return _output(result, encode, time.perf_counter() - started, active.preset.name)


def _output(result: Any, encode: Callable[[Any], bytes], engine_s: float, preset: str = "") -> Output:
    """Encode a GenerationResult (on the worker thread) into what the HTTP layer sends."""
    encode_started = time.perf_counter()
    data = encode(result.splats)
    timings = {k: float(v) for k, v in dict(result.timings).items()}
    timings["encode"] = time.perf_counter() - encode_started
    return Output(
        data=data,
        splats=len(result.splats),
        preset=str(getattr(result, "preset", None) or preset),
        time_s=engine_s,  # X-Generation-Time: this job's engine time, batch-mates or not
        timings=timings,
        gaussians=result.splats,
    )


def _after_failure(exc: BaseException) -> None:
    if _is_cuda_oom(exc):
        gc.collect()
        _empty_cuda_cache()  # leave the GPU usable for the next request


def _can_share(
    generator: Any, preset: Preset, factory: GeneratorFactory, device: str | None, random_weights: bool
) -> bool:
    """Whether the new preset can run on the serving generator's models (the pipeline's rule:
    equal models_key, and a generator that can fork its per-run state)."""
    if not callable(getattr(generator, "fork", None)):
        return False
    can = getattr(generator, "can_share", None)
    if callable(can):
        return bool(can(preset))
    return bool(factory(preset, device, random_weights).models_key() == generator.models_key())


def _ready_message(generator: Any, seconds: float, warmup_s: float) -> str:
    """/health's message once a preset is ready: time taken, warm-up, and whether torch.compile
    failed there (runs then go on uncompiled, which a miner should see)."""
    message = f"ready in {seconds:.1f}s"
    if warmup_s:
        message += f" (warm-up {warmup_s:.1f}s)"
    failure = getattr(generator, "compile_failure", None)
    if failure:
        message += f"; torch.compile failed, serving uncompiled: {failure}"
    return message


def _describe_models(generator: Any, preset: Preset) -> str:
    """Short human label of the loaded models, e.g. "tiny_mvdream, random weights, fp32"."""
    random = bool(getattr(generator, "random_weights", False)) or preset.weights == "random"
    source = "random weights" if random else (preset.mvdream_ckpt or preset.mvdream_id)
    if preset.guidance == "sd" and not random:
        source = preset.sd_id
    return f"{preset.guidance}, {source}, {preset.dtype}"


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _release_memory() -> None:
    gc.collect()
    _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gpu_room(device: Any) -> tuple[int, str]:
    """Free bytes on `device` (a CUDA torch.device) and an id that names the GPU for every process
    (its UUID: CUDA_VISIBLE_DEVICES may number it differently in each)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    properties = torch.cuda.get_device_properties(device)
    return int(free), str(getattr(properties, "uuid", "") or f"{properties.name}-{device.index or 0}")


def gpu_memory(device: str) -> dict[str, int] | None:
    """Bytes allocated by torch on the current CUDA device now and at peak; None off CUDA."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return {
        "in_use_bytes": int(torch.cuda.memory_allocated()),
        "peak_bytes": int(torch.cuda.max_memory_allocated()),
    }


def fault_spec_from_env() -> dict[str, list[Fault]]:
    return parse_faults(os.environ.get(FAULT_ENV))


__all__ = [
    "GenerationCancelled",
    "ModelHost",
    "NotReady",
    "Output",
    "PresetError",
    "PresetSwitch",
    "SwitchRefused",
    "UnknownPreset",
    "fault_spec_from_env",
    "gpu_memory",
]
