"""The one rasterizer entry point: gsplat on CUDA, a pure-PyTorch reference elsewhere.

Both backends follow gsplat's `rasterization(..., packed=False, render_mode="RGB")` conventions
(see torch_backend's docstring for the details) so training on CPU and GPU sees the same images.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from engine.render import gsplat_backend
from engine.render.torch_backend import rasterize_torch

Backend = Literal["auto", "torch", "gsplat"]


def select_backend(device: torch.device, backend: Backend = "auto") -> Literal["torch", "gsplat"]:
    """ "auto" picks gsplat for CUDA tensors when it imports, else the torch reference."""
    if backend == "torch":
        return "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError("the gsplat backend needs CUDA tensors")
        if not gsplat_backend.available():
            raise RuntimeError("the gsplat backend was requested but gsplat does not import")
        return "gsplat"
    if backend != "auto":
        raise ValueError(f"unknown backend {backend!r}: use 'auto', 'torch' or 'gsplat'")
    return "gsplat" if device.type == "cuda" and gsplat_backend.available() else "torch"


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    near: float = 0.01,
    far: float = 100.0,
    backend: Backend = "auto",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Render N Gaussians into C cameras.

    means (N,3); quats (N,4) wxyz, any norm; scales (N,3) linear; opacities (N,) in [0,1];
    colors (N,3) (or (C,N,3)) rgb; viewmats (C,4,4) world->camera OpenCV; Ks (C,3,3);
    background (3,) or (C,3), None = black.
    Returns images (C,H,W,3) and info {"means2d": (C,N,2) pixel coordinates, its .grad filled by
    backward when inputs require grad; "radii": (C,N) int, 0 = not visible; "depths": (C,N)}.
    """
    num_cams = viewmats.shape[0]
    dim = colors.shape[-1]
    if background is None:
        background = torch.zeros(dim, dtype=colors.dtype, device=colors.device)
    backgrounds = background.to(colors.dtype).expand(num_cams, dim).contiguous()
    args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, near, far)
    if select_backend(means.device, backend) == "gsplat":
        return gsplat_backend.rasterize_gsplat(*args)
    return rasterize_torch(*args)


__all__ = ["rasterize", "select_backend"]
