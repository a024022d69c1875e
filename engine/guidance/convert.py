"""Load MVDream's original (LDM-format) weights into our diffusers / transformers modules.

Sources:
- `MVDream/MVDream` `sd-v2.1-base-4view.pt`: one flat state dict with
  `model.diffusion_model.*` (MultiViewUNetModel), `first_stage_model.*` (LDM AutoencoderKL),
  `cond_stage_model.model.*` (OpenCLIP ViT-H/14 text tower) and the diffusion schedule buffers.
- `ashawkey/mvdream-sd2.1-diffusers` `unet/`: the same MultiViewUNetModel keys without the
  `model.diffusion_model.` prefix (its VAE and text encoder are already diffusers/HF format).

Every target parameter is looked up by its LDM name (derived from the diffusers name, the way
diffusers' convert_ldm_unet_checkpoint names blocks) and must exist with the same shape; every
checkpoint key must be consumed or be on a short, explicit list of keys that are unused by
design. Any violation raises ConversionError naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.model."

# LatentDiffusionInterface.register_schedule buffers: our DDIMScheduler recomputes the same
# scaled-linear schedule, so these are unused by design.
SCHEDULE_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    }
)
# OpenCLIP text-tower entries SD 2.1's penultimate-layer encoder never uses (the last resblock
# is handled separately: it is the one layer the HF encoder does not have).
CLIP_UNUSED = frozenset({"text_projection", "logit_scale", "attn_mask"})

Transform = Callable[[torch.Tensor], torch.Tensor]
# diffusers/HF name -> (LDM name, transform), or None: keep the module's own value (non-weights)
SourceFn = Callable[[str], "tuple[str, Transform] | None"]


class ConversionError(ValueError):
    """A checkpoint that does not map one-to-one onto the module; the message names the key."""


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _resnet(rest: str) -> str:
    """diffusers ResnetBlock2D -> LDM ResBlock parameter names."""
    for new, old in (
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ):
        if rest.startswith(new):
            return old + rest[len(new) :]
    raise ConversionError(f"no LDM name for resnet parameter {rest!r}")


def _config_value(module: torch.nn.Module, key: str) -> Any:
    """A field of a diffusers/transformers model's config (their configs are untyped)."""
    return getattr(module.config, key)


def _config_int(module: torch.nn.Module, key: str) -> int:
    return int(_config_value(module, key))


def unet_sources(unet: torch.nn.Module) -> SourceFn:
    """diffusers UNet2DConditionModel names -> LDM (MVDream MultiViewUNetModel) names."""
    n = _config_int(unet, "layers_per_block")
    names = list(unet.state_dict())
    up_has_attn = {i: any(k.startswith(f"up_blocks.{i}.attentions.") for k in names) for i in range(8)}
    fixed = {
        "conv_in.": "input_blocks.0.0.",
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "class_embedding.linear_1.": "camera_embed.0.",
        "class_embedding.linear_2.": "camera_embed.2.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.attentions.0.": "middle_block.1.",
    }

    def source(name: str) -> tuple[str, Transform]:
        for new, old in fixed.items():
            if name.startswith(new):
                return old + name[len(new) :], _same
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = 1 + i * (n + 1) + j
            return (
                f"input_blocks.{block}.0.{_resnet(rest)}"
                if kind == "resnets"
                else f"input_blocks.{block}.1.{rest}"
            ), _same
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
            return f"input_blocks.{(int(m[1]) + 1) * (n + 1)}.0.op.{m[2]}", _same
        if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", name):
            return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}", _same
        if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = i * (n + 1) + j  # up blocks hold n + 1 resnets
            return (
                f"output_blocks.{block}.0.{_resnet(rest)}"
                if kind == "resnets"
                else f"output_blocks.{block}.1.{rest}"
            ), _same
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
            i = int(m[1])
            return f"output_blocks.{i * (n + 1) + n}.{2 if up_has_attn[i] else 1}.conv.{m[2]}", _same
        raise ConversionError(f"no LDM name for UNet parameter {name!r}")

    return source


def _conv1x1_to_linear(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, 0, 0] if t.ndim == 4 else t


def vae_sources(vae: torch.nn.Module) -> SourceFn:
    """diffusers AutoencoderKL names -> LDM AutoencoderKL names (decoder up blocks reversed)."""
    levels = len(_config_value(vae, "block_out_channels"))
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}

    def source(name: str) -> tuple[str, Transform]:
        if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", name):
            return f"{m[1]}.norm_out.{m[2]}", _same
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name):
            return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", _same
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
            return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", _same
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name):
            level = levels - 1 - int(m[1])
            return f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", _same
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
            return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}", _same
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", name):
            return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", _same
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", name):
            for new, old in attn.items():
                if m[2].startswith(new):
                    return f"{m[1]}.mid.attn_1.{old}{m[2][len(new) :]}", _conv1x1_to_linear
        if re.fullmatch(
            r"(encoder\.conv_in|encoder\.conv_out|decoder\.conv_in|decoder\.conv_out|quant_conv|post_quant_conv)\.(weight|bias)",
            name,
        ):
            return name, _same
        raise ConversionError(f"no LDM name for VAE parameter {name!r}")

    return source


def _qkv_part(index: int) -> Transform:
    return lambda t: t.chunk(3, dim=0)[index]


def clip_sources(text_encoder: torch.nn.Module) -> SourceFn:
    """HF CLIPTextModel names -> OpenCLIP text-tower names (fused in_proj split into q, k, v)."""
    simple = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
    }
    layer_parts = {
        "self_attn.out_proj.": "attn.out_proj.",
        "layer_norm1.": "ln_1.",
        "layer_norm2.": "ln_2.",
        "mlp.fc1.": "mlp.c_fc.",
        "mlp.fc2.": "mlp.c_proj.",
    }

    def source(name: str) -> tuple[str, Transform] | None:
        local = name.removeprefix("text_model.")
        if local == "embeddings.position_ids":
            return None  # a constant index buffer, not a weight
        if local in simple:
            return simple[local], _same
        if local.startswith("final_layer_norm."):
            return "ln_final." + local[len("final_layer_norm.") :], _same
        if m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", local):
            prefix, rest = f"transformer.resblocks.{m[1]}.", m[2]
            if qkv := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                return f"{prefix}attn.in_proj_{qkv[2]}", _qkv_part("qkv".index(qkv[1]))
            for new, old in layer_parts.items():
                if rest.startswith(new):
                    return prefix + old + rest[len(new) :], _same
        raise ConversionError(f"no OpenCLIP name for text-encoder parameter {name!r}")

    return source


def load_mapped(
    module: torch.nn.Module,
    checkpoint: Mapping[str, torch.Tensor],
    prefix: str,
    sources: SourceFn,
    label: str,
    assign: bool = False,
) -> set[str]:
    """Set every entry of `module.state_dict()` from `checkpoint`; returns the keys consumed."""
    converted: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    for name, target in module.state_dict().items():
        found = sources(name)
        if found is None:
            converted[name] = target
            continue
        key, transform = prefix + found[0], found[1]
        if key not in checkpoint:
            raise ConversionError(f"checkpoint lacks {key!r} (needed for {label} {name})")
        value = transform(checkpoint[key])
        if tuple(value.shape) != tuple(target.shape):
            raise ConversionError(
                f"checkpoint key {key!r} has shape {tuple(value.shape)}, {label} {name} needs {tuple(target.shape)}"
            )
        converted[name] = value
        consumed.add(key)
    module.load_state_dict(converted, strict=True, assign=assign)
    return consumed


def _raise_unconsumed(
    checkpoint: Mapping[str, torch.Tensor], consumed: set[str], unused: set[str], what: str
) -> None:
    left = sorted(k for k in checkpoint if k not in consumed and k not in unused)
    if left:
        more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
        raise ConversionError(f"unexpected key {left[0]!r} in {what}{more}")


def unwrap_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """Lightning-style {'state_dict': {...}} wrappers -> the flat state dict."""
    inner = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    return inner if isinstance(inner, Mapping) else checkpoint


def load_original_mvdream(
    checkpoint: Mapping[str, torch.Tensor],
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    assign: bool = False,
) -> None:
    """`sd-v2.1-base-4view.pt` -> our UNet, VAE and (penultimate-layer) CLIP text encoder."""
    checkpoint = unwrap_state_dict(checkpoint)
    consumed = load_mapped(unet, checkpoint, UNET_PREFIX, unet_sources(unet), "UNet", assign)
    consumed |= load_mapped(vae, checkpoint, VAE_PREFIX, vae_sources(vae), "VAE", assign)
    consumed |= load_mapped(
        text_encoder, checkpoint, CLIP_PREFIX, clip_sources(text_encoder), "text encoder", assign
    )
    # SD 2.1 conditions on the penultimate layer: the HF encoder has one layer fewer than the tower
    layers = _config_int(text_encoder, "num_hidden_layers")
    last = f"{CLIP_PREFIX}transformer.resblocks.{layers}."
    unused = set(SCHEDULE_BUFFERS) | {CLIP_PREFIX + k for k in CLIP_UNUSED}
    unused |= {k for k in checkpoint if k.startswith(last)}
    _raise_unconsumed(checkpoint, consumed, unused, "the MVDream checkpoint")


def load_mvdream_unet(
    state_dict: Mapping[str, torch.Tensor], unet: torch.nn.Module, assign: bool = False
) -> None:
    """ashawkey/mvdream-sd2.1-diffusers `unet/` weights (LDM names, no prefix) -> our UNet."""
    consumed = load_mapped(unet, state_dict, "", unet_sources(unet), "UNet", assign)
    _raise_unconsumed(state_dict, consumed, set(), "the MVDream UNet weights")
