"""open_clip loading (local weights only) and the validator's image/text embedding.

Preprocessing read from 404-Repo/three-gen-subnet, validation/engine/metrics/alignment_scorer.py
(TextVSImageMetric.preprocess_images / score_text_alignment): the uint8 renders / 255, float16 on
every device, bicubic resize to 224 (align_corners=False, no antialias), then torchvision Normalize with
the CLIP mean and std *both multiplied by 3* (what validators run, so we do the same), image and
text features L2-normalised under autocast, cosine = their dot product in float32.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import startup
from engine.scoring.seeded import seeded_init
from engine.scoring.weights import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    TINY_CLIP_MODEL,
    WeightsMissing,
    require_clip,
)

TINY_MODEL = TINY_CLIP_MODEL  # a small random CLIP built in code, for tests
CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VALIDATOR_NORM_FACTOR = 3.0  # the subnet scales mean and std by 3 (alignment_scorer.py)
TEXT_CACHE_SIZE = 64
CLIP_SEED = 403  # --random-weights: seeded_init, the same numbers on every machine

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": CLIP_IMAGE_SIZE,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 32,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_clip(
    model_name: str, pretrained: str | None, device: torch.device, random_weights: bool
) -> tuple[torch.nn.Module, object]:
    """(model in eval mode on `device`, tokenizer). Random weights skip every weight look-up and
    are seeded (engine.scoring.seeded), not open_clip's own initialisation."""
    startup.reveal("torchvision")  # open_clip imports it (engine/startup.py hides it)
    import open_clip

    if model_name == TINY_MODEL:
        if not random_weights:
            raise WeightsMissing(f"{TINY_MODEL} is a test architecture: it only has random weights")
        model = open_clip.CLIP(**TINY_CONFIG)
        tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    else:
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r}")
        weights = None if random_weights else str(require_clip(model_name, pretrained or ""))
        model = open_clip.create_model(model_name, pretrained=weights, device="cpu")
        tokenizer = open_clip.get_tokenizer(model_name)
    if random_weights:
        seeded_init(model, CLIP_SEED)
    return model.to(device).eval(), tokenizer


def preprocess_views(images: torch.Tensor, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """uint8 (C, H, W, 3) renders -> normalised (C, 3, size, size), as the validator feeds CLIP."""
    x = (images.float() / 255.0).permute(0, 3, 1, 2).half()  # the validator resizes in float16
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    # scaled in float32, then cast to the images' dtype (what torchvision's Normalize does)
    mean = (torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * VALIDATOR_NORM_FACTOR).to(x.device, x.dtype)
    std = (torch.tensor(CLIP_STD).view(1, 3, 1, 1) * VALIDATOR_NORM_FACTOR).to(x.device, x.dtype)
    return (x - mean) / std


class ClipEmbedder:
    """One loaded open_clip model; text embeddings cached per prompt."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        device: str | torch.device | None = None,
        random_weights: bool = False,
    ) -> None:
        self.model_name = model_name
        self.pretrained = None if random_weights else pretrained
        self.random_weights = random_weights
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model: Any = None  # open_clip's CLIP (encode_image / encode_text)
        self._tokenizer: Any = None
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is None:
            self._model, self._tokenizer = build_clip(
                self.model_name, self.pretrained, self.device, self.random_weights
            )

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, enabled=self.device.type == "cuda")

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        self.load()
        hit = self._text_cache.get(prompt)
        if hit is not None:
            self._text_cache.move_to_end(prompt)
            return hit
        tokens = self._tokenizer(prompt).to(self.device)
        with self._autocast():
            feats = self._model.encode_text(tokens)
            feats /= feats.norm(dim=-1, keepdim=True)  # in place: keeps autocast's fp16, as the validator
        self._text_cache[prompt] = feats
        if len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return feats

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        self.load()
        x = preprocess_views(images.to(self.device))
        if self.device.type != "cuda":
            x = x.float()  # no autocast off the GPU: float32 weights need float32 input
        with self._autocast():
            feats = self._model.encode_image(x)
            feats /= feats.norm(dim=-1, keepdim=True)
        return feats

    def cosines(self, images: torch.Tensor, prompt: str) -> np.ndarray:
        """Per-view cosine between each uint8 (C, H, W, 3) render and the prompt, float32 (C,)."""
        image = self.image_features(images)
        text = self.text_features(prompt)
        scores = image @ text.T.to(image.dtype)  # outside autocast, in the features' dtype (validator)
        return scores.float().reshape(-1).cpu().numpy()
