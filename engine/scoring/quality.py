"""The validator's image-quality model: DINOv2-small with a one-logit head, mean over the views.

Read from 404-Repo/three-gen-subnet:
- validation/engine/models/quality_model.py (QualityClassifierModel, DINOv2Net): a transformers
  Dinov2Model (facebook/dinov2-small), the CLS token of last_hidden_state -> Linear(384, 1) ->
  sigmoid; an unused embedding head Linear(384, 256) sits in the checkpoint. Each view: uint8
  (H, W, 3) / 255, bilinear resize to 518 (align_corners=False, no antialias), ImageNet mean/std;
- validation/engine/metrics/quality_scorer.py (score_images_quality): iqa = the plain mean of the
  16 probabilities, no outlier filter.
The validator scores one view at a time; we batch them (the same arithmetic, one launch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import startup
from engine.scoring.seeded import seeded_init
from engine.scoring.weights import DEFAULT_QUALITY_MODEL, TINY_QUALITY_MODEL, WeightsMissing, require_quality

QUALITY_IMAGE_SIZE = 518
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_DIM = 256
QUALITY_SEED = 404

# facebook/dinov2-small's config.json (the architecture; weights come from the checkpoint). The
# tiny model shares every field but the sizes: the same code path, small enough for CPU tests.
_DINOV2_COMMON: dict = {
    "image_size": 518,
    "patch_size": 14,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "use_swiglu_ffn": False,
}
DINOV2_CONFIGS: dict[str, dict] = {
    DEFAULT_QUALITY_MODEL: {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "mlp_ratio": 4,
        **_DINOV2_COMMON,
    },
    TINY_QUALITY_MODEL: {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        **_DINOV2_COMMON,
    },
}


class QualityNet(nn.Module):
    """DINOv2 backbone + the score head (the names match the subnet's checkpoint keys)."""

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.emb_head = nn.Linear(hidden_size, EMBEDDING_DIM)  # unused at scoring time
        self.score_head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.backbone(pixel_values=x).last_hidden_state[:, 0]
        return self.score_head(cls).squeeze(1)  # logits (B,)


def build_quality_model(name: str, device: torch.device, random_weights: bool) -> QualityNet:
    """The quality model in eval mode on `device`; random weights are seeded (engine.scoring.seeded)."""
    startup.reveal("transformers")  # engine/startup.py hides it from a gen404 process
    from transformers import Dinov2Config, Dinov2Model

    if name not in DINOV2_CONFIGS:
        raise ValueError(f"unknown quality model {name!r}: use {' or '.join(DINOV2_CONFIGS)}")
    if name == TINY_QUALITY_MODEL and not random_weights:
        raise WeightsMissing(f"{TINY_QUALITY_MODEL} is a test architecture: it only has random weights")
    config = Dinov2Config(**DINOV2_CONFIGS[name])
    model = QualityNet(Dinov2Model(config), config.hidden_size)
    if random_weights:
        seeded_init(model, QUALITY_SEED)
    else:
        backbone_file, head_file = require_quality()
        _load_checkpoints(model, backbone_file, head_file)
    return model.to(device).eval()


def _load_checkpoints(model: QualityNet, backbone_file: str, head_file: str) -> None:
    """dinov2-small's model.safetensors into the backbone, then the subnet's quality_scorer
    checkpoint over the whole net (it loads non-strictly, as the subnet does)."""
    from safetensors.torch import load_file

    missing, _ = model.backbone.load_state_dict(load_file(backbone_file), strict=False)
    if [k for k in missing if not k.endswith("mask_token")]:
        raise ValueError(f"{backbone_file} is not a DINOv2 checkpoint (missing {missing[:3]})")
    state = load_file(head_file)
    if "score_head.weight" not in state:
        raise ValueError(f"{head_file} has no score_head: not the subnet's quality checkpoint")
    model.load_state_dict(state, strict=False)


def preprocess_quality(images: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W, 3) -> normalised float32 (C, 3, 518, 518), as the validator's _tensor_transform."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(
        x, size=(QUALITY_IMAGE_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=False
    )
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class QualityScorer:
    """One loaded quality model; `probabilities(images)` gives one quality per view."""

    def __init__(self, name: str, device: torch.device, random_weights: bool) -> None:
        self.name = name
        self.device = device
        self.random_weights = random_weights
        self._model: QualityNet | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is None:
            self._model = build_quality_model(self.name, self.device, self.random_weights)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """sigmoid(logit) per uint8 (C, H, W, 3) view, float64 (C,); float32 arithmetic as the
        validator (which leaves TF32 off)."""
        self.load()
        assert self._model is not None
        logits = self._model(preprocess_quality(images.to(self.device)))
        return torch.sigmoid(logits.float()).double().cpu().numpy()
