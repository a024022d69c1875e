"""Tiny MVDream: the real classes at toy width with seeded random weights, fully offline.

Used by the `smoke` preset (CPU, seconds) and the tests. Same code path as the full model:
the CLIP text encoder, AutoencoderKL (8x downsampling, as SD), the multi-view UNet with the camera
embedding, DDIMScheduler; only widths and depths shrink. Its SDS gradient is meaningful as a
signal path, not as a prior: the weights are random.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL

from engine.guidance.clip_text import ClipTextConfig, ClipTextModel
from engine.guidance.clip_tokenizer import BatchTokenizer
from engine.guidance.configs import Components, ddim_scheduler
from engine.guidance.mvdream_unet import build_unet, mvdream_camera, mvdream_unet_config
from engine.guidance_spec import GuidanceSpec

if TYPE_CHECKING:
    from engine.guidance.sds import SDSGuidance

MAX_LENGTH = 77


class ByteTokenizer(BatchTokenizer):
    """Deterministic offline tokenizer: UTF-8 bytes + BOS/EOS/PAD, HF call shape (`.input_ids`).

    ids: 0 PAD, 1 BOS, 2 EOS, 3 + byte.
    """

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    vocab_size = 3 + 256

    def __init__(self, model_max_length: int = MAX_LENGTH) -> None:
        self.model_max_length = model_max_length

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        max_length = max_length or self.model_max_length
        body = [3 + b for b in text.lower().encode("utf-8")][: max_length - 2]
        return [self.bos_token_id, *body, self.eos_token_id]


TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": ByteTokenizer.vocab_size,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": MAX_LENGTH,
    "hidden_act": "gelu",
    "projection_dim": 32,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,  # 4 levels: 8x downsampling as SD's VAE
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "attention_head_dim": (2, 4),  # head counts, as SD 2.1's config
    "cross_attention_dim": TINY_TEXT_CONFIG["hidden_size"],
    "use_linear_projection": True,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
    "act_fn": "silu",
}


def tiny_components(seed: int = 0, multiview: bool = True) -> Components:
    """Seeded random tiny tokenizer, text encoder, VAE and UNet (4-view MVDream or plain)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = ClipTextModel(ClipTextConfig.from_dict(TINY_TEXT_CONFIG))
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        config = mvdream_unet_config(TINY_UNET_CONFIG) if multiview else dict(TINY_UNET_CONFIG)
        unet = build_unet(config, num_frames=4 if multiview else None)
    return {
        "tokenizer": ByteTokenizer(),
        "text_encoder": text_encoder,
        "vae": vae,
        "unet": unet,
        "scheduler": ddim_scheduler(),
    }


def build_tiny_mvdream(
    spec: GuidanceSpec, device: str | torch.device, random_weights: bool = True
) -> SDSGuidance:
    """Always seeded random weights (`random_weights` keeps the builders' one signature)."""
    from engine.guidance.sds import SDSGuidance

    components = tiny_components(spec.seed)
    return SDSGuidance.for_spec(spec, components, device, frames=4, camera_fn=mvdream_camera)
