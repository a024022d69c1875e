"""Render a result the way the validator does: its transform, its orbit cameras, white
background, uint8 images by truncation.

Read from 404-Repo/three-gen-subnet: validation/server/pipeline.py (16 views, azimuth
linspace(0, 360, 16), elevation -15, 518 x 518), validation/engine/rendering/renderer.py
(radius 2.5, fov 49.1, near 0.01, far 100, bbox 1.5) and
validation/engine/rendering/gaussian_splatting/gs_renderer.py (white background, colours
clipped to [0, 1], then `(img * 255).to(torch.uint8)`).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.cameras import ViewSet, validator_views, views
from engine.render import Backend, rasterize
from engine.scoring.transform import VALIDATOR_BBOX_SIZE, ViewSplats, validator_transform
from engine.splats import Splats

VALIDATOR_SIZE = 518
VALIDATOR_VIEWS = 16
WHITE = (1.0, 1.0, 1.0)


def render_view_set(
    vs: ViewSplats,
    cameras: ViewSet,
    backend: Backend = "auto",
    background: tuple[float, float, float] = WHITE,
) -> torch.Tensor:
    """uint8 (C, H, W, 3) renders of transformed splats, on the splats' device."""
    dev = vs.means.device

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=dev)

    with torch.no_grad():
        images, _ = rasterize(
            vs.means,
            vs.quats,
            vs.scales,
            vs.opacities,
            vs.colors,
            t(cameras.viewmats),
            t(cameras.Ks),
            cameras.width,
            cameras.height,
            background=t(np.asarray(background, np.float32)),
            backend=backend,
        )
    return (images.clamp(0.0, 1.0) * 255.0).to(torch.uint8)  # truncation, as the validator


def render_validator_views(
    splats: Splats | ViewSplats,
    size: int = VALIDATOR_SIZE,
    n: int = VALIDATOR_VIEWS,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
) -> torch.Tensor:
    """The validator's scoring views (azimuth 0..360 in n steps, elevation -15, radius 2.5)."""
    vs = (
        splats if isinstance(splats, ViewSplats) else validator_transform(splats, VALIDATOR_BBOX_SIZE, device)
    )
    return render_view_set(vs, validator_views(n=n, size=size), backend)


def render_orbit(
    splats: Splats,
    elevation: float,
    azimuth: float,
    radius: float,
    size: int,
    bbox_size: float = VALIDATOR_BBOX_SIZE,
    fovy: float = 49.1,
    device: str | torch.device = "cpu",
    backend: Backend = "auto",
) -> torch.Tensor:
    """One view through the validator's transform and camera path, uint8 (H, W, 3)."""
    cams = views(np.array([elevation]), np.array([azimuth]), radius, fovy, size, size)
    return render_view_set(validator_transform(splats, bbox_size, device), cams, backend)[0]
