"""The validator's normalisation of a result before it renders it (torch, on the scoring device).

Read from 404-Repo/three-gen-subnet, validation/engine/rendering/gaussian_splatting/gs_utils.py
(transform_gs_data) and validation/engine/io/ply/loader.py (activations on load):
- activations in float32: alpha = sigmoid(opacity), scale = exp(log scale), unit quaternions,
  DC colour rgb = 0.5 + C0 * f_dc (no clamp, higher SH ignored);
- re-centre by the mean of *all* coordinates (one scalar, not a per-axis centroid);
- scale so the largest side of the axis-aligned bounding box (float64) is `bbox_size` (1.5 for
  the 16 scoring views; 1.0 for the reference render); scales are multiplied by the same factor;
- opacities are divided by that factor and clipped to [0, 1] (their "volume scale").
Done in torch on the render device: on a GPU this is ~1 ms where numpy took ~50 ms for 270k splats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.splats import SH_C0, Splats

VALIDATOR_BBOX_SIZE = 1.5


class FramingError(ValueError):
    """The result cannot be framed (no splats, NaN/inf positions, a zero-size bounding box): a
    property of the input, which the validation service answers 400 with score 0 (not 500)."""


@dataclass(frozen=True)
class ViewSplats:
    """Activated splats in the validator's normalised frame, float32 tensors ready for rasterize."""

    means: torch.Tensor  # (N, 3)
    quats: torch.Tensor  # (N, 4) unit, wxyz
    scales: torch.Tensor  # (N, 3) linear
    opacities: torch.Tensor  # (N,) in [0, 1]
    colors: torch.Tensor  # (N, 3) rgb (not clamped)
    scaling: float  # the factor applied to positions and scales

    def __len__(self) -> int:
        return int(self.means.shape[0])


def validator_transform(
    splats: Splats, bbox_size: float = VALIDATOR_BBOX_SIZE, device: str | torch.device = "cpu"
) -> ViewSplats:
    """Normalise `splats` as the validator does; FramingError for a result it cannot frame."""
    if len(splats) == 0:
        raise FramingError("no splats to transform")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32)).to(device, non_blocking=True)

    points = t(splats.positions)
    lo, hi = torch.aminmax(points.double(), dim=0)
    max_side = float((hi - lo).max())  # one host sync; also catches NaN / inf positions
    if not np.isfinite(max_side) or not torch.isfinite(points).all():
        raise FramingError("positions contain NaN or infinite values")
    if max_side <= 0.0:
        raise FramingError("all splats sit at one point: the bounding box is empty")
    scaling = bbox_size / max_side
    return ViewSplats(
        means=(points - points.mean()) * scaling,
        quats=torch.nn.functional.normalize(t(splats.rotations), dim=-1),
        scales=torch.exp(t(splats.scales)) * scaling,
        opacities=torch.clamp(torch.sigmoid(t(splats.opacities)) * (1.0 / scaling), 0.0, 1.0),
        colors=0.5 + SH_C0 * t(splats.sh_dc),
        scaling=scaling,
    )
