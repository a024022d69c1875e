"""MVDream's multi-view UNet expressed with diffusers building blocks.

MVDream = SD 2.1-base's UNet plus (a) a camera embedding Linear(16,1280)-SiLU-Linear(1280,1280)
added to the timestep embedding, which is exactly diffusers' `class_embed_type="projection"`
(`emb = emb + class_embedding(class_labels)`), and (b) self-attention over the tokens of all
views of a sample group at once. (b) is an attention processor on every `attn1`; cross-attention
(`attn2`) stays per view, as in MVDream's BasicTransformerBlock3D.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from engine.guidance.configs import SD21_UNET_CONFIG

CAMERA_DIM = 16


def mvdream_unet_config(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """SD 2.1 UNet config plus MVDream's 16-d camera embedding (added to the time embedding)."""
    config = dict(base or SD21_UNET_CONFIG)
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM)
    return config


class MultiViewAttnProcessor:
    """Self-attention across `num_frames` views: (B*F, L, C) tokens attend as (B, F*L, C)."""

    def __init__(self, num_frames: int = 4) -> None:
        self.num_frames = num_frames
        self._inner = AttnProcessor2_0()  # SDPA

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        frames = self.num_frames
        if encoder_hidden_states is not None or frames == 1:  # cross-attention stays per view
            return self._inner(attn, hidden_states, encoder_hidden_states, attention_mask)
        bf, tokens, channels = hidden_states.shape
        if bf % frames:
            raise ValueError(f"multi-view attention: batch {bf} is not a multiple of {frames} frames")
        joint = hidden_states.reshape(bf // frames, frames * tokens, channels)
        out = self._inner(attn, joint, None, attention_mask)
        return out.reshape(bf, tokens, channels)


def set_multiview_attention(unet: UNet2DConditionModel, num_frames: int = 4) -> None:
    """Install the multi-view processor on every self-attention (`attn1`), SDPA elsewhere."""
    processors: dict[str, Any] = {}
    for name in unet.attn_processors:
        is_self = name.endswith("attn1.processor")
        processors[name] = MultiViewAttnProcessor(num_frames) if is_self else AttnProcessor2_0()
    unet.set_attn_processor(processors)


def build_unet(config: dict[str, Any], num_frames: int | None = None) -> UNet2DConditionModel:
    """UNet from `config`; `num_frames` switches the multi-view self-attention on."""
    unet = UNet2DConditionModel(**config)
    if num_frames:
        set_multiview_attention(unet, num_frames)
    return unet


# OpenGL (y up) -> MVDream's "blender" world (z up): new rows (x, -z, y). This is
# mvdream/camera_utils.py::convert_opengl_to_blender (a left multiply: the world turns, the
# camera keeps OpenGL axes), as ashawkey's mvdream get_camera and DreamGaussian's
# `camera[:, [0, 2, 1, 3]]; camera[:, 1] *= -1` do to the same orbit c2w.
_OPENGL_TO_BLENDER = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def mvdream_camera(c2w: torch.Tensor) -> torch.Tensor:
    """Our OpenGL camera-to-world (B,4,4), +y up -> MVDream's camera input (B,16).

    As mvdream/camera_utils.py: world to z-up, translation normalised onto the unit sphere
    (`normalize_camera`), then the 4x4 flattened row-major.
    """
    cam = _OPENGL_TO_BLENDER.to(c2w.device) @ c2w.reshape(-1, 4, 4).float()
    translation = cam[:, :3, 3]
    cam[:, :3, 3] = translation / (translation.norm(dim=1, keepdim=True) + 1e-8)
    return cam.reshape(-1, 16)
