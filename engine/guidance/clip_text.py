"""The CLIP text encoder SDS conditions on, in plain torch, with transformers' parameter names.

Why not transformers' CLIPTextModel: importing transformers is the largest library import an
endpoint makes after torch and diffusers (~1.1 s of ~4.7 s on the CPU dev box; more on the
GPU boxes), and diffusers imports it too whenever it is visible (engine/startup.py hides it).
The encoder is small and fixed (SD 2.x: OpenCLIP ViT-H/14's text tower as 23 layers, then the
final LayerNorm), so it lives here, checked equal to transformers' by tests/test_clip_text.py.

Names: `text_model.embeddings.token_embedding.weight`, `text_model.encoder.layers.N.self_attn.
{q,k,v,out}_proj`, `...layer_norm1/2`, `...mlp.fc1/fc2`, `text_model.final_layer_norm`, as in the
`text_encoder/model.safetensors` of the SD 2.1 and MVDream repositories (transformers 4's layout;
transformers 5 saves the same names without `text_model.`, and both load), and
engine.guidance.convert maps OpenCLIP's tower onto the same names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "text_model."
# A transformers CLIPTextModel's buffer that older files hold: a constant 0..76 index, not a weight.
POSITION_IDS = PREFIX + "embeddings.position_ids"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ClipTextConfig:
    """The fields of a transformers CLIPTextConfig (text_encoder/config.json) the encoder uses."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"CLIP text config: hidden_act {self.hidden_act!r} (expected {' or '.join(ACTIVATIONS)})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"CLIP text config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClipTextConfig:
        """Known fields taken, the rest of a config.json (architectures, dtype, ...) ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # OpenAI CLIP's (SD 1.x); OpenCLIP ViT-H uses exact gelu


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "quick_gelu": _quick_gelu}


class _Attention(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_attention_heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        # causal, no padding mask: SD's conditioning attends over the padded 77 tokens as trained
        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=True
        )
        projected: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        return projected


class _Mlp(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class _Layer(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = _Mlp(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        out: torch.Tensor = x + self.mlp(self.layer_norm2(x))
        return out


class _Embeddings(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length > self.position_embedding.num_embeddings:
            raise ValueError(
                f"{length} tokens: the text encoder takes {self.position_embedding.num_embeddings}"
            )
        positions = torch.arange(length, device=input_ids.device)
        out: torch.Tensor = self.token_embedding(input_ids) + self.position_embedding(positions)
        return out


class _Encoder(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class _TextTransformer(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class ClipTextModel(nn.Module):
    """`model(input_ids)[0]`: the last hidden state (B, L, hidden), final LayerNorm applied, as
    transformers' CLIPTextModel answers it. The pooled output is not computed: SDS never uses it."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.config = config
        self.text_model = _TextTransformer(config)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        text = self.text_model
        x = text.embeddings(input_ids)
        for layer in text.encoder.layers:
            x = layer(x)
        return (text.final_layer_norm(x),)

    @classmethod
    def from_pretrained(cls, folder: str | Path, subfolder: str = "") -> ClipTextModel:
        """A transformers `text_encoder/` folder: config.json and model.safetensors (or
        pytorch_model.bin, read with weights_only). Every weight must be there, none left over."""
        where = Path(folder) / subfolder
        config = ClipTextConfig.from_dict(json.loads((where / "config.json").read_text()))
        state = {k if k.startswith(PREFIX) else PREFIX + k: v for k, v in _read_weights(where).items()}
        state.pop(POSITION_IDS, None)
        with torch.device("meta"):  # no random init: the file's tensors are assigned
            model = cls(config)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
            raise ValueError(f"{where}: not a CLIP text encoder of its config.json ({what})")
        return model.float()  # fp16 files: SDS runs the encoder in float32 anyway


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    raise FileNotFoundError(f"{folder}: none of {', '.join(WEIGHT_FILES)}")
