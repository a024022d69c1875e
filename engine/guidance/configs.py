"""Architecture configs of the full-size models (SD 2.1-base family) and the DDIM schedule.

Used to build the random-weight architectures and the original-checkpoint targets; pretrained
diffusers folders bring their own config files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from diffusers import DDIMScheduler

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from engine.guidance.clip_text import ClipTextModel


class Components(TypedDict):
    """What SDSGuidance is built from, whichever way it was loaded (pretrained, original
    checkpoint, random, tiny)."""

    tokenizer: Any  # clip_tokenizer.ClipTokenizer or tiny.ByteTokenizer: the same call shape
    text_encoder: ClipTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDIMScheduler


# stabilityai/stable-diffusion-2-1-base unet/config.json, with MVDream's 32x32 latents.
SD21_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20, 20),  # diffusers' legacy name: these are head counts (64-d heads)
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "upcast_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
}

# .../vae/config.json (LDM first_stage_config: ch 128, ch_mult 1,2,4,4, 2 res blocks, z 4)
SD21_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

# .../text_encoder/config.json (read by clip_text.ClipTextConfig): OpenCLIP ViT-H/14 text tower as
# HF CLIP, 23 of its 24 layers (SD 2.x conditions on the penultimate layer, then the final LayerNorm).
SD21_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def ddim_scheduler() -> DDIMScheduler:
    """SD 2.1 / MVDream training schedule: scaled-linear 0.00085..0.012, 1000 steps, epsilon."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
