"""Guidance models for score distillation: MVDream (4-view), SD 2.1 (1 view), tiny (CPU smoke).

`build_guidance(preset, device)` reads the preset through `GuidanceSpec.of` (engine.guidance_spec:
the guidance fields, each with a default, so any preset-like object works). The builders take the
typed spec. `guidance_scale` and `negative_prompt` are passed per call by the pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.guidance_spec import GuidanceSpec, preset_value
from engine.presets import COMPILE_PARTS

if TYPE_CHECKING:
    import torch

__all__ = [
    "Guidance",
    "GuidanceSpec",
    "PromptEmbeds",
    "StageTimer",
    "build_guidance",
    "import_builder",
    "preset_value",
]


@dataclass(frozen=True)
class PromptEmbeds:
    """Text conditioning for one prompt: (1, tokens, dim) each, in the UNet's dtype."""

    cond: torch.Tensor
    uncond: torch.Tensor


# The stage-timing hook: `timer("unet")` is a context manager that adds the block's wall time
# to that stage (engine.pipeline's _StageTimer; `gen404 bench` reads the totals).
StageTimer = Callable[[str], AbstractContextManager[None]]


@runtime_checkable
class Guidance(Protocol):
    """Everything the pipeline calls on a guidance model (SDSGuidance implements it)."""

    frames: int  # views per sample group: 4 MVDream, 1 SD (the pipeline samples cameras to match)
    ref_size: int  # renders are resized to this before the VAE (per preset; models are shared)
    cuda_graphs: bool  # replay the UNet and VAE encoder as CUDA graphs (CUDA only)

    def set_channels_last(self, enabled: bool) -> None: ...

    def set_compile(
        self,
        enabled: bool,
        backend: str = "jit",
        parts: tuple[str, ...] = COMPILE_PARTS,
        regions: bool = False,
    ) -> None: ...

    def reseed(self, seed: int) -> None:
        """Restart the noise stream: same seed, same run."""

    def camera_inputs(self, c2w: torch.Tensor) -> torch.Tensor | None:
        """The model's camera conditioning for OpenGL c2w (N,4,4), or None when it takes none."""

    def encode_prompt(self, prompt: str, negative: str) -> PromptEmbeds: ...

    def sds_loss(
        self,
        images: torch.Tensor,
        c2w: torch.Tensor,
        embeds: PromptEmbeds,
        step: int,
        total_steps: int,
        guidance_scale: float,
        camera: torch.Tensor | None = None,
        timer: StageTimer | None = None,
    ) -> torch.Tensor:
        """Scalar loss whose gradient wrt `images` is the SDS gradient. `camera`: these views'
        rows of `camera_inputs` (else computed from `c2w`); `timer` times "vae_encode" and "unet"."""


# guidance name -> (module, builder): imported on first use (diffusers, transformers: seconds)
_BUILDERS = {
    "tiny_mvdream": ("engine.guidance.tiny", "build_tiny_mvdream"),
    "mvdream": ("engine.guidance.mvdream", "build_mvdream"),
    "sd": ("engine.guidance.sd", "build_sd"),
}


def import_builder(preset: Any) -> Callable[..., Guidance]:
    """`preset`'s guidance builder, its module (with diffusers and transformers) imported on the
    calling thread. A start that decodes AOT packages on another thread imports this first:
    diffusers' lazy modules are not safe to import from two threads at once (a CPU test start
    failed with "cannot import name 'AutoencoderKL' from 'diffusers'")."""
    spec = GuidanceSpec.of(preset)
    if spec.guidance not in _BUILDERS:
        raise ValueError(f"unknown guidance {spec.guidance!r} (expected mvdream, sd or tiny_mvdream)")
    module, function = _BUILDERS[spec.guidance]
    builder: Callable[..., Guidance] = getattr(importlib.import_module(module), function)
    return builder


def build_guidance(preset: Any, device: str | torch.device, random_weights: bool = False) -> Guidance:
    """Build the preset's guidance model on `device`.

    Pretrained weights come from engine.models (local folder, HF cache; never a download):
    missing ones raise engine.models.MissingWeightsError naming the pull command.
    `random_weights` (or `weights: random`) builds the full-size architecture with seeded
    random weights instead, for benchmarks.
    """
    spec = GuidanceSpec.of(preset)
    return import_builder(spec)(spec, device, random_weights=random_weights or spec.weights == "random")
