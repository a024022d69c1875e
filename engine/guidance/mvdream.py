"""MVDream SDS guidance: 4 views per group, camera-conditioned multi-view UNet.

Weights (never downloaded here; engine.models finds them or says how to pull them):
- `mvdream_ckpt` set: the original `sd-v2.1-base-4view.pt` (UNet, VAE and OpenCLIP text tower in
  one LDM state dict, converted by engine.guidance.convert) + the CLIP tokenizer of `sd_id`;
- otherwise the diffusers port `mvdream_id` (ashawkey/mvdream-sd2.1-diffusers): `unet/` holds
  MultiViewUNetModel (LDM-named) weights and a config we translate; vae/text_encoder/tokenizer
  are standard diffusers/transformers folders (the text encoder and tokenizer read by our own
  engine.guidance.clip_text / clip_tokenizer: no transformers import);
- random: the full-size architecture with seeded random weights (benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from engine.guidance.clip_text import ClipTextConfig, ClipTextModel
from engine.guidance.clip_tokenizer import ClipTokenizer
from engine.guidance.configs import (
    SD21_TEXT_CONFIG,
    SD21_UNET_CONFIG,
    SD21_VAE_CONFIG,
    Components,
    ddim_scheduler,
)
from engine.guidance.convert import load_mvdream_unet, load_original_mvdream
from engine.guidance.mvdream_unet import CAMERA_DIM, build_unet, mvdream_camera, mvdream_unet_config
from engine.guidance.sds import SDSGuidance
from engine.guidance.tiny import ByteTokenizer
from engine.guidance_spec import GuidanceSpec

FRAMES = 4


def unet_config_from_ldm(params: dict[str, Any]) -> dict[str, Any]:
    """MultiViewUNetModel constructor params (the port's unet/config.json) -> our diffusers config."""
    mc, mult = int(params["model_channels"]), [int(m) for m in params["channel_mult"]]
    head_channels = int(params.get("num_head_channels", -1))
    if int(params.get("transformer_depth", 1)) != 1:
        raise ValueError("MVDream UNet: only transformer_depth 1 is supported")
    attn_ds = {int(d) for d in params["attention_resolutions"]}
    with_attn = [2**level in attn_ds for level in range(len(mult))]
    channels = [mc * m for m in mult]
    heads = [c // head_channels if head_channels > 0 else int(params["num_heads"]) for c in channels]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in with_attn]
    config = dict(SD21_UNET_CONFIG)
    config.update(
        in_channels=int(params.get("in_channels", 4)),
        out_channels=int(params.get("out_channels", 4)),
        block_out_channels=tuple(channels),
        layers_per_block=int(params["num_res_blocks"]),
        attention_head_dim=tuple(heads),
        cross_attention_dim=int(params["context_dim"]),
        down_block_types=tuple(down),
        up_block_types=tuple(d.replace("Down", "Up") for d in reversed(down)),
        norm_num_groups=32,  # LDM's GroupNorm32
    )
    if params.get("camera_dim") not in (None, CAMERA_DIM):
        raise ValueError(f"MVDream UNet: camera_dim {params['camera_dim']} (expected {CAMERA_DIM})")
    return mvdream_unet_config(config)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # zip-format checkpoints map lazily; weights_only refuses pickled code
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


def _check_materialized(module: torch.nn.Module, what: str) -> None:
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise RuntimeError(f"{what}: {name} was not loaded")


def load_original_components(
    ckpt: Path,
    tokenizer_dir: Path,
    unet_config: dict[str, Any] | None = None,
    vae_config: dict[str, Any] | None = None,
    text_config: dict[str, Any] | None = None,
) -> Components:
    """Components from `sd-v2.1-base-4view.pt` (sd-v2-base.yaml architecture unless configs given)."""
    state = _read_state_dict(ckpt)
    with torch.device("meta"):  # no 1.2 B-parameter random init: the checkpoint's tensors are assigned
        unet = build_unet(unet_config or mvdream_unet_config(), num_frames=FRAMES)
        vae = AutoencoderKL(**(vae_config or SD21_VAE_CONFIG))
        text_encoder = ClipTextModel(ClipTextConfig.from_dict(text_config or SD21_TEXT_CONFIG))
    load_original_mvdream(state, unet, vae, text_encoder, assign=True)
    for module, what in ((unet, "UNet"), (vae, "VAE"), (text_encoder, "text encoder")):
        _check_materialized(module, what)
    return {
        "tokenizer": ClipTokenizer.from_pretrained(tokenizer_dir, subfolder="tokenizer"),
        "text_encoder": text_encoder,
        "vae": vae,
        "unet": unet,
        "scheduler": ddim_scheduler(),
    }


def load_port_components(folder: Path) -> Components:
    """Components from a diffusers-format MVDream folder (ashawkey/mvdream-sd2.1-diffusers layout)."""
    from engine.models import component_file

    params = json.loads((folder / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = build_unet(unet_config_from_ldm(params), num_frames=FRAMES)
    load_mvdream_unet(_read_state_dict(component_file(folder, "unet")), unet, assign=True)
    _check_materialized(unet, "UNet")
    return {
        "tokenizer": ClipTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "text_encoder": ClipTextModel.from_pretrained(folder, subfolder="text_encoder"),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        "unet": unet,
        "scheduler": ddim_scheduler(),
    }


def random_components(device: str | torch.device, seed: int, multiview: bool = True) -> Components:
    """Full-size SD 2.1-base architecture (MVDream UNet when `multiview`) with seeded random weights.

    Built directly on `device` (fast on a GPU). The tokenizer is the offline byte tokenizer:
    with random weights the text only has to be deterministic, not meaningful.
    """
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device:
        torch.manual_seed(seed)
        config = mvdream_unet_config() if multiview else dict(SD21_UNET_CONFIG, sample_size=64)
        unet = build_unet(config, num_frames=FRAMES if multiview else None)
        vae = AutoencoderKL(**SD21_VAE_CONFIG)
        text_encoder = ClipTextModel(ClipTextConfig.from_dict(SD21_TEXT_CONFIG))
    return {
        "tokenizer": ByteTokenizer(),
        "text_encoder": text_encoder,
        "vae": vae,
        "unet": unet,
        "scheduler": ddim_scheduler(),
    }


def build_mvdream(
    spec: GuidanceSpec, device: str | torch.device, random_weights: bool = False
) -> SDSGuidance:
    from engine.models import require, requirements

    if random_weights:
        components = random_components(device, spec.seed)
    else:
        sources = requirements(spec)
        paths = [require(source, spec.name) for source in sources]  # MissingWeightsError before any loading
        if sources[0].filename:
            components = load_original_components(paths[0], paths[1])
        else:
            components = load_port_components(paths[0])
    return SDSGuidance.for_spec(spec, components, device, FRAMES, mvdream_camera)
