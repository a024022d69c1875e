"""What a guidance model is built from: a typed, torch-free view of a preset's guidance fields.

`GuidanceSpec.of(preset)` reads only these fields, each with gen404's default, so any preset-like
object works (a Preset, a namespace, a dict; model ids may also sit under `model_ids`).
engine.models (the weights lookup, which the console imports) and engine.guidance (the builders)
both take a spec, so neither imports the other's layer to read a preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["GuidanceSpec", "preset_value"]


@dataclass(frozen=True)
class GuidanceSpec:
    guidance: str = "mvdream"  # "mvdream" | "sd" | "tiny_mvdream"
    weights: str = "pretrained"  # "pretrained" | "random"
    mvdream_id: str = "ashawkey/mvdream-sd2.1-diffusers"
    mvdream_ckpt: str | None = None  # the original single-file checkpoint, when set
    sd_id: str = "stabilityai/stable-diffusion-2-1-base"
    dtype: str = "fp32"  # UNet and VAE precision: "fp32" | "fp16" | "bf16"
    ref_size: int = 256
    seed: int = 0
    name: str = "?"  # the preset's name, for the pull command in error messages

    @classmethod
    def of(cls, preset: Any) -> GuidanceSpec:
        """The spec of a preset-like object (a spec passes through unchanged; None: all defaults)."""
        if isinstance(preset, GuidanceSpec):
            return preset
        values = {f.name: _lookup(preset, f.name) for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})


_DEFAULTS = GuidanceSpec()


def _lookup(preset: Any, key: str) -> Any:
    """`preset.key` (or `preset[key]`, or `preset.model_ids[key]`), else None."""
    if isinstance(preset, Mapping):
        value = preset.get(key)
        ids = preset.get("model_ids")
    else:
        value = getattr(preset, key, None)
        ids = getattr(preset, "model_ids", None)
    if value is None and isinstance(ids, Mapping):
        value = ids.get(key)
    return value


def preset_value(preset: Any, key: str) -> Any:
    """`preset.key` (or `preset[key]`, or `preset.model_ids[key]`), else gen404's default."""
    value = _lookup(preset, key)
    return getattr(_DEFAULTS, key, None) if value is None else value
