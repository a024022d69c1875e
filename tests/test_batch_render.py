"""One rasterisation for several jobs (engine.render.rasterize_batch + GaussianModel.stacked):
each job's images, parameter gradients and densification statistics are what rendering it
alone gives, whatever the other jobs' Gaussian counts (the shorter ones are padded).

CPU: the torch reference, where the batch is a loop over padded sets, so equality is exact up
to float summation order (atol 1e-6 on images, rtol 1e-5 on gradients). CUDA (skips cleanly
without it): gsplat's batched launch against gsplat per job; its backward adds gradients with
atomics in a varying order, so gradients are compared at rtol 1e-4 (measured run-to-run noise
of one render is ~1e-6 relative).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cameras import camera_tensors, orbit_c2w
from engine.gaussians import GaussianModel, view_gradient_stats
from engine.render import rasterize, rasterize_batch

SIZE = 32
COUNTS = (120, 300, 57)  # different counts: the first and last are padded to 300


def _models(device: str) -> list[GaussianModel]:
    models = []
    for k, n in enumerate(COUNTS):
        m = GaussianModel.random_init(n, torch.Generator().manual_seed(k), device)
        with torch.no_grad():  # more opaque and anisotropic (rotations matter), so gradients are large
            m.params["opacities"].add_(2.0)
            m.params["scales"].add_(torch.tensor([0.8, 0.0, -0.8], device=device))
            m.params["quats"].add_(torch.rand(n, 4, generator=torch.Generator().manual_seed(k)).to(device))
            m.params["sh_dc"].add_(torch.linspace(-1, 1, n * 3, device=device).reshape(n, 3))
        models.append(m)
    return models


def _cameras(k: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    c2w = np.stack([orbit_c2w(10.0 * k + 90.0 * v, 15.0 - 10.0 * k, 2.0) for v in range(4)])
    viewmats, ks = camera_tensors(c2w, 49.1, SIZE, SIZE)
    return viewmats.to(device), ks.to(device)


def _weights(shape: tuple[int, ...], device: str) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(3)).to(device)


def _alone(models: list[GaussianModel], device: str, backend: str) -> list[dict[str, object]]:
    out = []
    for k, m in enumerate(models):
        viewmats, ks = _cameras(k, device)
        background = torch.full((3,), float(k % 2), device=device)
        images, info = rasterize(
            m.means,
            m.quats,
            m.scales,
            m.opacities,
            m.colors,
            viewmats,
            ks,
            SIZE,
            SIZE,
            background,
            backend=backend,
        )
        (images * _weights(images.shape, device)).sum().backward()
        stats = view_gradient_stats(info["means2d"].grad, info["radii"], SIZE, SIZE)
        grads = {name: p.grad.clone() for name, p in m.params.items()}
        out.append({"images": images.detach(), "grads": grads, "stats": stats})
        for p in m.params.values():
            p.grad = None
    return out


def _together(models: list[GaussianModel], device: str, backend: str) -> list[dict[str, object]]:
    cams = [_cameras(k, device) for k in range(len(models))]
    viewmats, ks = torch.stack([c[0] for c in cams]), torch.stack([c[1] for c in cams])
    backgrounds = torch.stack([torch.full((4, 3), float(k % 2), device=device) for k in range(len(models))])
    batch = rasterize_batch(
        *GaussianModel.stacked(models), viewmats, ks, SIZE, SIZE, backgrounds, backend=backend
    )
    assert batch.means2d_grads() is None  # nothing before backward
    loss = sum((batch.images[k] * _weights(batch.images[k].shape, device)).sum() for k in range(len(models)))
    loss.backward()
    grads2d = batch.means2d_grads()
    assert grads2d is not None and grads2d.shape == (len(models), 4, max(COUNTS), 2)
    sums, counts = view_gradient_stats(grads2d, batch.radii, SIZE, SIZE)
    out = []
    for k, m in enumerate(models):
        n = len(m)
        assert not batch.radii[k, :, n:].any()  # padding is never visible
        assert not grads2d[k, :, n:].any()  # and gets no view-space gradient
        grads = {name: p.grad.clone() for name, p in m.params.items()}
        out.append(
            {"images": batch.images[k].detach(), "grads": grads, "stats": (sums[k, :n], counts[k, :n])}
        )
    return out


def _compare(alone: list[dict], together: list[dict], rtol: float) -> None:  # type: ignore[type-arg]
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(b["images"], a["images"], rtol=0, atol=1e-6)
        for name, grad in a["grads"].items():
            assert grad.abs().max() > 0, name  # the comparison means something
            torch.testing.assert_close(b["grads"][name], grad, rtol=rtol, atol=1e-9, msg=name)
        torch.testing.assert_close(b["stats"][0], a["stats"][0], rtol=rtol, atol=1e-9)
        torch.testing.assert_close(b["stats"][1], a["stats"][1], rtol=0, atol=0)
        assert a["stats"][1].sum() > 0  # some Gaussians were seen


def test_batched_render_matches_each_job_alone_on_cpu() -> None:
    models = _models("cpu")
    _compare(_alone(models, "cpu", "torch"), _together(models, "cpu", "torch"), rtol=1e-5)


def test_padding_is_opacity_zero_and_keeps_each_models_own_values() -> None:
    models = _models("cpu")
    means, quats, scales, opacities, colors = GaussianModel.stacked(models)
    assert means.shape == (3, 300, 3) and opacities.shape == (3, 300)
    for k, m in enumerate(models):
        n = len(m)
        torch.testing.assert_close(opacities[k, :n], m.opacities, rtol=0, atol=0)
        torch.testing.assert_close(colors[k, :n], m.colors, rtol=0, atol=0)
        assert (opacities[k, n:] == 0).all()
        assert torch.isfinite(quats[k]).all() and torch.isfinite(scales[k]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_gsplat_render_matches_each_job_alone_on_cuda() -> None:
    pytest.importorskip("gsplat")
    models = _models("cuda")
    _compare(_alone(models, "cuda", "gsplat"), _together(models, "cuda", "gsplat"), rtol=1e-4)
