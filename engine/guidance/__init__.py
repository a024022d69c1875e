"""Guidance models for score distillation: MVDream (4-view), SD 2.1 (1 view), tiny (CPU smoke).

`build_guidance(preset, device)` reads only these preset fields, each with a default, so any
preset-like object (dataclass, namespace, dict) works: `guidance` ("mvdream" | "sd" |
"tiny_mvdream"), `weights` ("pretrained" | "random"), `mvdream_id`, `mvdream_ckpt`, `sd_id`,
`dtype` ("fp32" | "fp16" | "bf16": UNet and VAE precision), `ref_size`, `seed`.
`guidance_scale` and `negative_prompt` are passed per call by the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["Guidance", "PromptEmbeds", "build_guidance", "preset_value"]


@dataclass(frozen=True)
class PromptEmbeds:
    """Text conditioning for one prompt: (1, tokens, dim) each, in the UNet's dtype."""

    cond: torch.Tensor
    uncond: torch.Tensor


@runtime_checkable
class Guidance(Protocol):
    frames: int  # views per sample group: 4 MVDream, 1 SD

    def encode_prompt(self, prompt: str, negative: str) -> PromptEmbeds: ...

    def sds_loss(
        self,
        images: torch.Tensor,
        c2w: torch.Tensor,
        embeds: PromptEmbeds,
        step: int,
        total_steps: int,
        guidance_scale: float,
    ) -> torch.Tensor: ...


_DEFAULTS: dict[str, Any] = {
    "guidance": "mvdream",
    "weights": "pretrained",
    "mvdream_id": "ashawkey/mvdream-sd2.1-diffusers",
    "mvdream_ckpt": None,
    "sd_id": "stabilityai/stable-diffusion-2-1-base",
    "dtype": "fp32",
    "ref_size": 256,
    "seed": 0,
    "name": "?",
}


def preset_value(preset: Any, key: str) -> Any:
    """`preset.key` (or `preset[key]`, or `preset.model_ids[key]`), else gen404's default."""
    if isinstance(preset, Mapping):
        value = preset.get(key)
        ids = preset.get("model_ids")
    else:
        value = getattr(preset, key, None)
        ids = getattr(preset, "model_ids", None)
    if value is None and isinstance(ids, Mapping):
        value = ids.get(key)
    return _DEFAULTS.get(key) if value is None else value


def build_guidance(preset: Any, device: str | torch.device, random_weights: bool = False) -> Guidance:
    """Build the preset's guidance model on `device`.

    Pretrained weights come from engine.models (local folder, HF cache; never a download):
    missing ones raise engine.models.MissingWeightsError naming the pull command.
    `random_weights` (or `weights: random`) builds the full-size architecture with seeded
    random weights instead, for benchmarks.
    """
    kind = preset_value(preset, "guidance")
    random_weights = random_weights or preset_value(preset, "weights") == "random"
    if kind == "tiny_mvdream":
        from engine.guidance.tiny import build_tiny_mvdream

        return build_tiny_mvdream(preset, device)
    if kind == "mvdream":
        from engine.guidance.mvdream import build_mvdream

        return build_mvdream(preset, device, random_weights=random_weights)
    if kind == "sd":
        from engine.guidance.sd import build_sd

        return build_sd(preset, device, random_weights=random_weights)
    raise ValueError(f"unknown guidance {kind!r} (expected mvdream, sd or tiny_mvdream)")
