"""gsplat backend: a thin wrapper over `gsplat.rasterization` (CUDA only, imported lazily).

gsplat compiles its CUDA extension on first use (about 90 s), so importing this module is cheap
and the cost is paid on the first render.
"""

from __future__ import annotations

from torch import Tensor


def available() -> bool:
    """True when gsplat imports (it still needs CUDA tensors to run)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # a broken CUDA toolchain raises more than ImportError
        return False
    return True


def rasterize_gsplat(
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
    near: float,
    far: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """See `engine.render.rasterize`. `backgrounds` is (C,D)."""
    from gsplat import rasterization

    images, _alphas, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near,
        far_plane=far,
        backgrounds=backgrounds,
        render_mode="RGB",
        packed=False,
    )
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.dim() == means2d.dim():  # gsplat >= 1.5 gives per-axis radii (C,N,2)
        radii = radii.amax(-1)
    return images, {"means2d": means2d, "radii": radii, "depths": meta["depths"]}
