"""Pure-PyTorch differentiable Gaussian rasterizer with gsplat's conventions (CPU reference).

Mirrors gsplat 1.5 `rasterization(..., packed=False, render_mode="RGB", rasterize_mode="classic")`
as read from its CUDA sources (ProjectionEWA3DGSFused.cu, RasterizeToPixels3DGSFwd.cu):

- projection: world->camera, EWA Jacobian with the camera-space x/y clamped to 1.3x the
  field of view, 2D covariance + 0.3 px low-pass on the diagonal (eps2d), conic = its inverse;
- culling: depth outside [near, far], det <= 0, opacity < 1/255, box outside the image;
- extent: opacity-aware box, radius_x/y = ceil(min(3.33, sqrt(2 ln(255 opacity))) * sqrt(cov_xx/yy)),
  which contains every pixel where alpha >= 1/255, so pixels outside it never contribute;
- pixels: centres at (x + 0.5, y + 0.5), alpha = min(0.999, opacity * exp(-sigma)), skipped below
  1/255, front to back by camera depth (ties by index), a pixel stops before the Gaussian
  that would take its transmittance to <= 1e-4, background weighted by the final transmittance.

Instead of gsplat's per-tile lists, work is done on sparse (Gaussian, pixel) pairs: for each
visible Gaussian and image row, the pixels where alpha >= 1/255 form one run found by solving a
quadratic, so only contributing pairs are ever made; they are sorted by (pixel, depth) (a 16-bit
radix sort) and composited with a segmented cumulative sum of log(1 - alpha). The pair search
runs without autograd; with gradients, alpha is recomputed differentiably on the surviving pairs.
Images are processed in row bands sized to a pair budget so memory stays bounded at any size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
MAX_EXTEND = 3.33
PAIR_BUDGET = 1 << 22  # (Gaussian, pixel) pairs per row band: ~4M, a few hundred MB


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N,4) wxyz, any norm -> (N,3,3) rotation."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return rot.reshape(quats.shape[:-1] + (3, 3))


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of N Gaussians into C cameras.

    Returns means2d (C,N,2), conics (C,N,3) [a, b, c] of the inverse 2D covariance,
    depths (C,N), radii (C,N,2) int32 (0 = culled).
    """
    rot_c, t_c = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot_c, means) + t_c[:, None, :]
    m = quat_to_rotmat(quats) * scales[:, None, :]
    covars = m @ m.transpose(-1, -2)
    covars_c = torch.einsum("cij,njk,clk->cnil", rot_c, covars, rot_c)

    x, y, z = means_c.unbind(-1)
    depth_ok = (z >= near) & (z <= far)
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))  # keeps culled entries finite (and grads)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # The Jacobian is evaluated at a position clamped to 1.3x the field of view, as gsplat does,
    # so Gaussians far off-screen do not get huge footprints.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z_safe * torch.minimum(torch.maximum(x / z_safe, -lim_x_neg), lim_x_pos)
    ty = z_safe * torch.minimum(torch.maximum(y / z_safe, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z_safe)
    jac = torch.stack(
        [fx / z_safe, zero, -fx * tx / z_safe**2, zero, fy / z_safe, -fy * ty / z_safe**2], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    with torch.no_grad():
        opac = opacities.detach()[None, :].expand_as(z)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = depth_ok & (det.detach() > 0) & (opac >= ALPHA_THRESHOLD) & ((rx > 0) | (ry > 0)) & inside
        radii = torch.stack([rx, ry], dim=-1).where(valid[..., None], torch.zeros_like(means2d))
    return means2d, conics, z, radii.to(torch.int32)


class _Spans(NamedTuple):
    """Per (Gaussian, image row): the run of pixels where alpha >= 1/255, front to back."""

    gauss: Tensor  # index into the camera's Gaussians
    row: Tensor
    x_start: Tensor  # first pixel column of the run
    width: Tensor  # run length (>= 1)
    dx0: Tensor  # mean_x - (x_start + 0.5)
    quad: Tensor  # (S,3): -log(opacity exp(-sigma)) = q0 dx^2 + q1 dx + q2 along the row


def _row_spans(
    means2d: Tensor, conics: Tensor, opacities: Tensor, gids: Tensor, radii: Tensor, width: int, height: int
) -> _Spans:
    """Solve, row by row, where each Gaussian's alpha reaches 1/255: sigma <= ln(255 opacity) is a
    quadratic in dx for a fixed row, so every row gives one exact run of pixels and no pixel is
    tested in vain. No gradients: this only decides which pairs contribute."""
    mx, my = _take(means2d, gids).double().unbind(-1)
    ry = _take(radii, gids)[:, 1].double()
    a, b, c = _take(conics, gids).double().unbind(-1)
    log_opac = torch.log(_take(opacities, gids).double())
    y0 = torch.ceil(my - ry - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(my + ry - 0.5).clamp(0, height - 1).long()
    rows_per = (y1 - y0 + 1).clamp_min(0)
    g = torch.repeat_interleave(torch.arange(len(gids), device=gids.device), rows_per)
    first = _take(torch.cumsum(rows_per, 0) - rows_per, g)
    row = _take(y0, g) + torch.arange(len(g), device=g.device) - first
    a, b, c, mx, my, log_opac = (_take(t, g) for t in (a, b, c, mx, my, log_opac))
    dy = my - (row + 0.5)
    # alpha >= 1/255  <=>  0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= ln(255 opacity)
    disc = (b * dy) ** 2 - a * (c * dy * dy - 2.0 * (log_opac + math.log(255.0)))
    root = torch.sqrt(disc.clamp_min(0))
    dx_lo, dx_hi = (-b * dy - root) / a, (-b * dy + root) / a
    x_start = torch.ceil(mx - dx_hi - 0.5).clamp_min(0)  # pixel centre x + 0.5 = mean_x - dx
    x_end = torch.floor(mx - dx_lo - 0.5).clamp_max(width - 1)
    run = torch.nonzero((disc >= 0) & (x_end >= x_start)).squeeze(1)
    a, b, c, dy, mx, x_start, x_end, log_opac, g, row = (
        _take(t, run) for t in (a, b, c, dy, mx, x_start, x_end, log_opac, g, row)
    )
    return _Spans(
        gauss=g,
        row=row,
        x_start=x_start.long(),
        width=(x_end - x_start).long() + 1,
        dx0=mx - (x_start + 0.5),
        quad=torch.stack([0.5 * a, b * dy, 0.5 * c * dy * dy - log_opac], dim=-1),
    )


def _row_bands(
    row: Tensor, width_per_span: Tensor, width: int, height: int, budget: int
) -> list[tuple[int, int]]:
    """Split image rows into bands of about `budget` pairs whose pixel ids fit 16 bits (numpy
    radix-sorts those, ~10x faster than a 64-bit sort)."""
    max_rows = max(1, 65536 // width)
    cost = (
        torch.zeros(height, dtype=torch.int64, device=row.device).index_add_(0, row, width_per_span).tolist()
    )
    bands, start, acc = [], 0, 0
    for r, rc in enumerate(cost):
        if acc and (acc + rc > budget or r - start >= max_rows):
            bands.append((start, r))
            start, acc = r, 0
        acc += rc
    bands.append((start, height))
    return bands


def _stable_argsort_u16(keys: Tensor) -> Tensor:
    """Stable argsort of keys in [0, 65536): numpy radix-sorts uint16 on CPU (~10x torch.sort)."""
    if keys.device.type != "cpu":
        return torch.sort(keys, stable=True).indices
    return torch.from_numpy(np.argsort(keys.numpy().astype(np.uint16), kind="stable"))


def _band_pairs(spans: _Spans, band_y0: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """(Gaussian index, pixel id, alpha) of the contributing pairs of one band of spans, in
    (pixel, depth) order: the pixels of each span, sorted by pixel, then cut where a pixel's
    transmittance would fall to <= 1e-4. No gradients."""
    counts = spans.width
    span = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    k = torch.arange(len(span), device=span.device) - _take(torch.cumsum(counts, 0) - counts, span)
    pix = _take((spans.row - band_y0) * width + spans.x_start, span) + k
    dx = _take(spans.dx0, span) - k
    q = _take(spans.quad, span)
    alpha = torch.exp(-(q[:, 0] * dx * dx + q[:, 1] * dx + q[:, 2])).clamp_max(MAX_ALPHA)

    # Spans are listed front to back, so a stable sort by pixel gives (pixel, depth) order.
    perm = _stable_argsort_u16(pix)
    pix, span, alpha = (_take(t, perm) for t in (pix, span, alpha))

    # A pixel stops before the Gaussian that takes its transmittance to <= 1e-4.
    log_t = torch.log1p(-alpha)
    cum = torch.cumsum(log_t, 0)
    alive = torch.nonzero(cum - _segment_first(cum - log_t, pix) > math.log(MIN_TRANSMITTANCE)).squeeze(1)
    span, pix, alpha = (_take(t, alive) for t in (span, pix, alpha))
    return _take(spans.gauss, span), pix + band_y0 * width, alpha


def _take(t: Tensor, index: Tensor) -> Tensor:
    """t[index] along dim 0 (index_select: much faster than advanced indexing on CPU)."""
    return t.index_select(0, index)


def _segment_first(values: Tensor, keys: Tensor) -> Tensor:
    """For runs of equal sorted `keys`, each element's run-first value of `values`."""
    starts = torch.ones_like(keys, dtype=torch.bool)
    starts[1:] = keys[1:] != keys[:-1]
    first = torch.nonzero(starts).squeeze(1)
    return _take(_take(values, first), torch.cumsum(starts, 0) - 1)


def _composite_camera(
    means2d: Tensor,
    conics: Tensor,
    depths: Tensor,
    radii: Tensor,
    opacities: Tensor,
    colors: Tensor,
    background: Tensor,
    width: int,
    height: int,
    pair_budget: int,
) -> Tensor:
    """Render one camera -> (H,W,D). Inputs are that camera's (N,...) slices."""
    dim = colors.shape[-1]
    visible = torch.nonzero(radii.amax(-1) > 0).squeeze(1)
    gids = visible[torch.argsort(depths.detach()[visible], stable=True)]  # front to back

    pair_g, pair_pix, pair_alpha = [], [], []
    with torch.no_grad():
        spans = _row_spans(means2d.detach(), conics.detach(), opacities.detach(), gids, radii, width, height)
        for b0, b1 in _row_bands(spans.row, spans.width, width, height, pair_budget):
            in_band = torch.nonzero((spans.row >= b0) & (spans.row < b1)).squeeze(1)  # keeps order
            if len(in_band):
                g, pix, alpha = _band_pairs(_Spans(*(_take(t, in_band) for t in spans)), b0, width)
                pair_g.append(_take(gids, g))
                pair_pix.append(pix)
                pair_alpha.append(alpha)
    if not pair_g:
        return background.expand(height, width, dim).clone()
    g = torch.cat(pair_g)
    pix = torch.cat(pair_pix)

    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, colors)
    )
    if needs_grad:  # recompute alpha differentiably on the surviving pairs
        params = torch.cat([means2d, conics, opacities[:, None]], dim=-1).index_select(0, g)
        pix_xy = torch.stack([pix % width, pix // width], dim=-1).to(params.dtype) + 0.5
        dx, dy = (params[:, 0:2] - pix_xy).unbind(-1)
        sigma = 0.5 * (params[:, 2] * dx * dx + params[:, 4] * dy * dy) + params[:, 3] * dx * dy
        alpha = torch.clamp_max(params[:, 5] * torch.exp(-sigma), MAX_ALPHA)
        log_t = torch.log1p(-alpha.double())
    else:
        log_t = torch.log1p(-torch.cat(pair_alpha))
        alpha = torch.cat(pair_alpha).to(colors.dtype)
    excl = torch.cumsum(log_t, 0) - log_t
    t_before = torch.exp(excl - _segment_first(excl, pix)).to(alpha.dtype)  # transmittance before
    weighted = (alpha * t_before)[:, None] * colors.index_select(0, g)

    n_pix = height * width
    rgb = torch.zeros(n_pix, dim, dtype=colors.dtype, device=pix.device).index_add(0, pix, weighted)
    log_final = torch.zeros(n_pix, dtype=torch.float64, device=pix.device).index_add(0, pix, log_t)
    t_final = torch.exp(log_final).to(rgb.dtype)
    return (rgb + t_final[:, None] * background[None, :]).reshape(height, width, dim)


def rasterize_torch(
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
    pair_budget: int = PAIR_BUDGET,
) -> tuple[Tensor, dict[str, Tensor]]:
    """See `engine.render.rasterize`. `backgrounds` is (C,D); colors (N,D) or (C,N,D)."""
    num_cams = viewmats.shape[0]
    means2d, conics, depths, radii = project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near, far
    )
    if means2d.requires_grad:
        means2d.retain_grad()  # view-space gradients for densification
    images = []
    for cam in range(num_cams):
        cam_colors = colors[cam] if colors.dim() == 3 else colors
        images.append(
            _composite_camera(
                means2d[cam],
                conics[cam],
                depths[cam],
                radii[cam],
                opacities,
                cam_colors,
                backgrounds[cam],
                width,
                height,
                pair_budget,
            )
        )
    return torch.stack(images), {"means2d": means2d, "radii": radii.amax(-1), "depths": depths}
