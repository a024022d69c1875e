"""The endpoint's model host: one Generator, its load state, preset switches, and faults.

Everything here that touches torch runs on the endpoint's single Worker thread (queue.py),
so loading, switching and generating never overlap. The event loop only reads the plain
attributes (status, progress, message, preset_name) for /health.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from engine.presets import Preset, PresetError, list_presets, load_preset, split_ref
from engine.service.queue import Worker

log = logging.getLogger("gen404.serve")

Status = Literal["loading", "ready", "error"]
FAULT_ENV = "GEN404_FAULT_INJECT"
FAULT_NAMES = ("RuntimeError", "ValueError", "MemoryError", "OutOfMemoryError")
GeneratorFactory = Callable[[Preset, "str | None", bool], Any]


class NotReady(Exception):
    """Models are loading or failed to load; the request should come back later."""


class GenerationCancelled(Exception):
    """The generation was stopped early (client gone, or the endpoint shutting down)."""


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
    `load:RuntimeError` makes model loading fail. Exception names: RuntimeError, ValueError,
    MemoryError, OutOfMemoryError (torch.cuda's, to exercise the out-of-memory path on CPU).
    """
    faults: dict[str, list[Fault]] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        stage, _, rest = item.strip().partition(":")
        name, _, text = rest.partition("@")
        if stage not in ("generate", "load") or name not in FAULT_NAMES:
            raise ValueError(f"{FAULT_ENV}: cannot parse {item!r} (want generate|load:ExceptionName[@text])")
        faults.setdefault(stage, []).append(Fault(name, text or None))
    return faults


def _take_fault(faults: dict[str, list[Fault]], stage: str, prompt: str = "") -> BaseException | None:
    for fault in faults.get(stage, []):
        if fault.prompt_contains is None or fault.prompt_contains in prompt:
            if fault.prompt_contains is None and stage == "generate":
                faults[stage].remove(fault)  # one-shot
            return _fault_types()[fault.exception](f"injected {stage} fault ({FAULT_ENV})")
    return None


def default_factory(preset: Preset, device: str | None, random_weights: bool) -> Any:
    from engine.pipeline import Generator  # torch-heavy: imported on the worker thread

    # serving: no device syncs at stage edges (stage times are then host-side only)
    return Generator(preset, device=device, random_weights=random_weights, sync_timings=False)


class ModelHost:
    def __init__(
        self,
        worker: Worker,
        preset_name: str,
        device: str | None = None,
        random_weights: bool = False,
        faults: dict[str, list[Fault]] | None = None,
        factory: GeneratorFactory = default_factory,
    ) -> None:
        self.worker = worker
        self.preset_name = preset_name
        self.device_request = None if device in (None, "auto") else device
        self.device = self.device_request or "auto"
        self.random_weights = random_weights
        self.faults = {stage: list(names) for stage, names in (faults or {}).items()}
        self.factory = factory
        self.status: Status = "loading"
        self.progress = 0.0
        self.message = "waiting to load models"
        self.models: str | None = None
        self._preset: Preset | None = None
        self._generator: Any = None
        self._lock = threading.Lock()  # guards status/progress/message against torn reads

    # --- state shown by /health -------------------------------------------------------------

    def _set(self, status: Status, message: str, progress: float | None = None) -> None:
        with self._lock:
            self.status = status
            self.message = message
            if progress is not None:
                self.progress = progress

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                "status": self.status,
                "preset": self.preset_name,
                "device": self.device,
                "models": self.models,
                "progress": round(self.progress, 3),
                "message": self.message,
            }

    # --- loading ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the start-up preset's models in the background (health says "loading")."""
        self._set("loading", f"loading models for preset {self.preset_name}", 0.0)
        self.worker.submit(lambda: self._load(self.preset_name))

    def _on_progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self.progress = max(0.0, min(1.0, float(fraction)))
            if message:
                self.message = message

    def _load(self, name: str, preset: Preset | None = None) -> None:
        started = time.perf_counter()
        try:
            preset = preset or load_preset(name)
            self._release_models()
            fault = _take_fault(self.faults, "load")
            if fault is not None:
                raise fault
            generator = self.factory(preset, self.device_request, self.random_weights)
            generator.load(self._on_progress)
            warmup_s = _warm_up(generator, self._on_progress)
        except Exception as exc:
            message = f"loading preset {name!r} failed: {type(exc).__name__}: {exc}"
            self._set("error", message)
            print(f"gen404 serve: error: {message}", file=sys.stderr, flush=True)
            log.debug("load failure", exc_info=True)
            return
        self._generator = generator
        self._preset = preset
        self.models = _describe_models(generator, preset)
        self.device = str(generator.device)  # the pipeline resolved "auto"
        self._set("ready", _ready_message(generator, started, warmup_s), 1.0)
        log.info("preset %s ready on %s (%s)", name, self.device, self.message)

    def _release_models(self) -> None:
        """Drop the current models before loading others, so two sets never share the GPU."""
        if self._generator is None:
            return
        self._generator = None
        gc.collect()
        _empty_cuda_cache()

    # --- preset switches ----------------------------------------------------------------------

    def available(self) -> list[str]:
        return list_presets()

    def switch(self, name: str) -> bool:
        """Switch to preset `name`; returns True when models must be reloaded.

        Raises UnknownPreset, PresetError (malformed YAML: the old preset is kept) or
        NotReady (models are loading). The work itself is queued on the worker, behind any
        generation in flight and ahead of every request that arrives later; a reload shows
        as "loading" in /health right away.
        """
        if split_ref(name)[0] not in self.available():  # a name, or a reference "name+iters=300"
            raise UnknownPreset(name)
        preset = load_preset(name)  # PresetError propagates: nothing has changed yet
        if self.status == "loading":
            raise NotReady("models are loading")
        generator = self._generator
        if self.status == "error" or generator is None:
            self.preset_name = name
            self._set("loading", f"loading models for preset {name}", 0.0)
            self.worker.submit(lambda: self._load(name, preset))
            return True
        # The pipeline's own rule decides (a fresh Generator is cheap until load()).
        new_key = self.factory(preset, self.device_request, self.random_weights).models_key()
        reload = new_key != generator.models_key()
        self.preset_name = name
        if reload:
            self._set("loading", f"switching to preset {name}: loading models", 0.0)
        self.worker.submit(lambda: self._apply(generator, preset))
        return reload

    def _apply(self, generator: Any, preset: Preset) -> None:
        started = time.perf_counter()
        try:
            reloaded = generator.set_preset(preset, self._on_progress)
            warmup_s = _warm_up(generator, self._on_progress)  # new shapes: capture before requests
        except Exception as exc:
            self._generator = None
            message = f"switching to preset {preset.name!r} failed: {type(exc).__name__}: {exc}"
            self._set("error", message)
            print(f"gen404 serve: error: {message}", file=sys.stderr, flush=True)
            return
        self._preset = preset
        self.models = _describe_models(generator, preset)
        # a switch that kept the models was "ready" throughout; its warm-up (and any compile
        # failure in it) still shows in /health's message
        self._set("ready", _ready_message(generator, started, warmup_s), 1.0)
        log.info("preset %s active (models %s)", preset.name, "reloaded" if reloaded else "kept")

    # --- generation (worker thread) -----------------------------------------------------------

    def generate(self, prompt: str, encode: Callable[[Any], bytes], cancel: threading.Event) -> Output:
        """Run one generation and encode it; called on the worker thread only."""
        if self.status != "ready" or self._generator is None:
            raise NotReady(self.message)
        fault = _take_fault(self.faults, "generate", prompt)

        def on_step(*_args: Any, **_kwargs: Any) -> None:
            if cancel.is_set():
                raise GenerationCancelled("generation stopped: client gone or endpoint stopping")

        started = time.perf_counter()
        try:
            if fault is not None:
                raise fault
            result = self._generator.generate(prompt, on_step=on_step)
        except Exception as exc:
            if _is_cuda_oom(exc):
                gc.collect()
                _empty_cuda_cache()  # leave the GPU usable for the next request
            raise
        engine_s = time.perf_counter() - started
        encode_started = time.perf_counter()
        data = encode(result.splats)
        timings = {k: float(v) for k, v in dict(result.timings).items()}
        timings["encode"] = time.perf_counter() - encode_started
        return Output(
            data=data,
            splats=len(result.splats),
            preset=str(getattr(result, "preset", None) or self.preset_name),
            time_s=engine_s,  # measured here: everything Generator.generate cost
            timings=timings,
            gaussians=result.splats,
        )


def _ready_message(generator: Any, started: float, warmup_s: float) -> str:
    """/health's message once a preset is ready: time taken, warm-up, and whether torch.compile
    failed there (runs then go on uncompiled, which a miner should see)."""
    message = f"ready in {time.perf_counter() - started:.1f}s"
    if warmup_s:
        message += f" (warm-up {warmup_s:.1f}s)"
    failure = getattr(generator, "compile_failure", None)
    if failure:
        message += f"; torch.compile failed, serving uncompiled: {failure}"
    return message


def _warm_up(generator: Any, progress: Callable[[float, str], None]) -> float:
    """Generator.warmup() (CUDA graphs, kernels) so the first request is as fast as the rest;
    generators without one (test doubles) are ready as loaded."""
    warmup = getattr(generator, "warmup", None)
    return float(warmup(progress) or 0.0) if callable(warmup) else 0.0


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


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    "UnknownPreset",
    "fault_spec_from_env",
    "gpu_memory",
]
