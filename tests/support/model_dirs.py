"""Weight folders on disk without weights, for tests of the lookup (engine.models) and its users."""

from __future__ import annotations

from pathlib import Path

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
