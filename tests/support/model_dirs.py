"""Weight folders on disk: without weights, for tests of the lookup (engine.models) and its users;
and a text encoder folder written by transformers itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# a diffusers port's components and the weights file each holds (as `gen404 models pull` leaves them)
_COMPONENTS = (
    ("unet", "diffusion_pytorch_model.safetensors"),
    ("vae", "diffusion_pytorch_model.safetensors"),
    ("text_encoder", "model.safetensors"),
)


def diffusers_folder(root: Path) -> None:
    """A complete diffusers layout under `root`: config + a 1000-byte stand-in weights file per
    component, and the tokenizer's files. Nothing in it loads; it only looks complete."""
    for component, weights in _COMPONENTS:
        (root / component).mkdir(parents=True)
        (root / component / "config.json").write_text("{}")
        (root / component / weights).write_bytes(b"\0" * 1000)
    (root / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer_config.json", "vocab.json", "merges.txt"):
        (root / "tokenizer" / name).write_text("{}")


def transformers_text_encoder(folder: Path, config: dict, seed: int = 0) -> Any:
    """A `text_encoder/` folder as transformers writes it (config.json, model.safetensors), from its
    own CLIPTextModel with seeded random weights; returns that model (the reference). Imported
    here: the console's tests share this module and must not import torch."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**config)).eval()
    model.save_pretrained(folder)
    return model
