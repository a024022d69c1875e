"""Plain Stable Diffusion 2.1-base SDS guidance: one view per sample, no camera conditioning."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from engine.guidance.clip_text import ClipTextModel
from engine.guidance.clip_tokenizer import ClipTokenizer
from engine.guidance.configs import Components, ddim_scheduler
from engine.guidance.mvdream import random_components
from engine.guidance.sds import SDSGuidance
from engine.guidance_spec import GuidanceSpec


def load_sd_components(folder: str | Path) -> Components:
    """A diffusers SD folder (stabilityai/stable-diffusion-2-1-base layout); our DDIM schedule."""
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")  # SDPA attention by default
    return {
        "tokenizer": ClipTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "text_encoder": ClipTextModel.from_pretrained(folder, subfolder="text_encoder"),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        "unet": unet,
        "scheduler": ddim_scheduler(),
    }


def build_sd(spec: GuidanceSpec, device: str | torch.device, random_weights: bool = False) -> SDSGuidance:
    from engine.models import require, requirements

    if random_weights:
        components = random_components(device, spec.seed, multiview=False)
    else:
        components = load_sd_components(require(requirements(spec)[0], spec.name))
    return SDSGuidance.for_spec(spec, components, device, frames=1, camera_fn=None)
