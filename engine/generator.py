"""The generator contract: what the service, `gen404 bench` and `gen404 generate` call.

Torch-free, so callers can type against it without loading the engine's torch layers;
engine.pipeline.Generator is the implementation (and test doubles may stand in for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from engine.splats import Splats

if TYPE_CHECKING:
    from engine.presets import Preset

__all__ = ["GenerationResult", "GeneratorProtocol", "ProgressCallback", "StepCallback"]

ProgressCallback = Callable[[float, str], None]  # (fraction done, message)
StepCallback = Callable[[int, int], None]  # (step, total steps)


@dataclass
class GenerationResult:
    splats: Splats
    timings: dict[str, float]  # seconds per stage, keys engine.pipeline.STAGES
    steps: int
    preset: str
    seed: int
    grown_to_min: bool
    total_s: float
    notes: list[str] = field(default_factory=list)
    # seconds inside the guidance stage (vae_encode, unet), only when substages were timed
    substages: dict[str, float] = field(default_factory=dict)


class GeneratorProtocol(Protocol):
    """Holds a preset's loaded guidance; `generate` may be called many times."""

    preset: Preset
    device: Any  # a torch.device (this module stays torch-free)
    sync_timings: bool  # device syncs at stage edges (honest per-stage split, slower)
    time_substages: bool  # also time the guidance's VAE encode and UNet (synced)
    compile_failure: str | None  # why torch.compile was dropped at warm-up, if it was

    @property
    def loaded(self) -> bool: ...

    def models_key(self) -> tuple[object, ...]: ...

    def load(self, progress: ProgressCallback | None = None) -> object: ...

    def warmup(self, progress: ProgressCallback | None = None, force: bool = False) -> float: ...

    def set_preset(self, preset: Preset, progress: ProgressCallback | None = None) -> bool: ...

    def generate(
        self, prompt: str, seed: int | None = None, on_step: StepCallback | None = None
    ) -> GenerationResult: ...
