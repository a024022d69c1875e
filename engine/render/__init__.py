"""The one rasterizer entry point: gsplat on CUDA, a pure-PyTorch reference elsewhere.

Both backends follow gsplat's `rasterization(..., packed=False, render_mode="RGB")` conventions
(see torch_backend's docstring for the details) so training on CPU and GPU sees the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class BatchRender:
    """What `rasterize_batch` gives back: J jobs' images and what densification reads."""

    images: Tensor  # (J,C,H,W,D)
    radii: Tensor  # (J,C,N) int, 0 = not visible (padding rows are never visible)
    _means2d_grads: Callable[[], Tensor | None]

    def means2d_grads(self) -> Tensor | None:
        """(J,C,N,2) view-space gradients in pixels, once backward has run (None before)."""
        return self._means2d_grads()


def rasterize_batch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    near: float = 0.01,
    far: float = 100.0,
    backend: Backend = "auto",
) -> BatchRender:
    """Render J sets of N Gaussians, each into its own C cameras, in one call where it pays.

    means (J,N,3), quats (J,N,4), scales (J,N,3), opacities (J,N), colors (J,N,D); viewmats
    (J,C,4,4); Ks (J,C,3,3); backgrounds (J,C,D). Sets of fewer Gaussians are padded to N with
    opacity 0, which both rasterizers cull (no pixel, no gradient). gsplat takes the leading
    dimension in one launch sequence with one host sync for its tile lists (a loop pays one per
    set); the torch reference loops over `rasterize`.
    """
    if select_backend(means.device, backend) == "gsplat":
        images, info = gsplat_backend.rasterize_gsplat(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            backgrounds.to(colors.dtype),
            near,
            far,
        )
        means2d = info["means2d"]
        return BatchRender(images, info["radii"], lambda: means2d.grad)
    outputs = [  # the reference, one set at a time through the single-set entry point
        rasterize(
            means[j],
            quats[j],
            scales[j],
            opacities[j],
            colors[j],
            viewmats[j],
            Ks[j],
            width,
            height,
            backgrounds[j],
            near,
            far,
            backend="torch",
        )  # fmt: skip
        for j in range(means.shape[0])
    ]
    points2d = [info["means2d"] for _, info in outputs]

    def grads() -> Tensor | None:
        found = [p.grad for p in points2d]
        return torch.stack([g for g in found if g is not None]) if all(g is not None for g in found) else None

    return BatchRender(
        torch.stack([image for image, _ in outputs]),
        torch.stack([info["radii"] for _, info in outputs]),
        grads,
    )


__all__ = ["BatchRender", "rasterize", "rasterize_batch", "select_backend"]
