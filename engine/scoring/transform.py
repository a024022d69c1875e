"""The validator's normalisation of a result before it renders it (numpy, torch-free).

Read from 404-Repo/three-gen-subnet, validation/engine/rendering/gaussian_splatting/gs_utils.py
(transform_gs_data) and validation/engine/io/ply/loader.py (activations on load):
- activations: alpha = sigmoid(opacity), scale = exp(log scale), unit quaternions, DC colour
  rgb = 0.5 + C0 * f_dc (no clamp, higher SH ignored);
- re-centre by the mean of *all* coordinates (one scalar, not a per-axis centroid);
- scale so the largest side of the axis-aligned bounding box is `bbox_size` (1.5 for the 16
  scoring views; 1.0 for the reference render); scales are multiplied by the same factor;
- opacities are divided by that factor and clipped to [0, 1] (their "volume scale").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.splats import Splats

VALIDATOR_BBOX_SIZE = 1.5


@dataclass(frozen=True)
class ViewSplats:
    """Activated splats in the validator's normalised frame, ready for the rasterizer."""

    means: np.ndarray  # (N, 3) float32
    quats: np.ndarray  # (N, 4) float32, unit, wxyz
    scales: np.ndarray  # (N, 3) float32, linear
    opacities: np.ndarray  # (N,) float32 in [0, 1]
    colors: np.ndarray  # (N, 3) float32 rgb (not clamped)
    scaling: float  # the factor applied to positions and scales

    def __len__(self) -> int:
        return int(self.means.shape[0])


def validator_transform(splats: Splats, bbox_size: float = VALIDATOR_BBOX_SIZE) -> ViewSplats:
    """Normalise `splats` as the validator does; ValueError for a result it cannot frame."""
    if len(splats) == 0:
        raise ValueError("no splats to transform")
    points = splats.positions.astype(np.float32, copy=False)
    if not np.all(np.isfinite(points)):
        raise ValueError("positions contain NaN or infinite values")
    extent = points.astype(np.float64).max(axis=0) - points.astype(np.float64).min(axis=0)
    max_side = float(extent.max())
    if max_side <= 0.0:
        raise ValueError("all splats sit at one point: the bounding box is empty")
    scaling = bbox_size / max_side
    centred = (points - points.mean()).astype(np.float32)  # float32 mean of all 3N values
    with np.errstate(over="ignore"):  # logits of +-inf (SPZ alpha bytes 0/255) are legal
        alphas = splats.alphas()
    opacities = np.clip(alphas * np.float32(1.0 / scaling), 0.0, 1.0).astype(np.float32)
    return ViewSplats(
        means=(centred * np.float32(scaling)).astype(np.float32),
        quats=splats.unit_rotations(),
        scales=(splats.linear_scales() * np.float32(scaling)).astype(np.float32),
        opacities=opacities,
        colors=splats.rgb(),
        scaling=scaling,
    )
