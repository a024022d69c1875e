"""GaussianModel: reference init, kNN scales, densify/prune with consistent Adam state, grow-to-min."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import gaussians
from engine.formats.ply import read_ply
from engine.gate import check_gate
from engine.gaussians import GaussianModel, LearningRates, mean_knn_distance
from engine.splats import SH_C0


def _model(n: int = 2000, seed: int = 0) -> GaussianModel:
    return GaussianModel.random_init(n, torch.Generator().manual_seed(seed))


def _train_one_step(model: GaussianModel) -> None:
    """One Adam step on an arbitrary loss so every parameter has non-zero moments."""
    opt = model.optimizer or model.setup_optimizer(LearningRates())
    loss = sum(
        (t * torch.linspace(0.5, 1.5, t.numel()).reshape(t.shape)).sum() for t in model.params.values()
    )
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_random_init_matches_the_reference_statistics() -> None:
    m = _model(4000)
    assert len(m) == 4000
    r = m.means.detach().norm(dim=1)
    assert float(r.max()) <= 0.5 + 1e-6
    # uniform in the ball: (r / R)^3 is uniform on [0, 1]
    assert abs(float((r / 0.5).pow(3).mean()) - 0.5) < 0.03
    assert abs(float(m.means.detach().mean(0).abs().max())) < 0.03
    rgb = m.colors.detach()
    assert float(rgb.min()) >= 0.5 and float(rgb.max()) <= 0.5 + SH_C0 / 255 + 1e-6  # near-grey
    assert torch.allclose(m.opacities.detach(), torch.full((4000,), 0.1))
    assert torch.equal(m.quats.detach(), torch.tensor([1.0, 0, 0, 0]).expand(4000, 4))
    s = m.params["scales"].detach()
    assert torch.equal(s[:, 0], s[:, 1]) and torch.equal(s[:, 0], s[:, 2])  # isotropic
    # the typical spacing of 4000 points in a ball of radius 0.5
    spacing = (4 / 3 * math.pi * 0.5**3 / 4000) ** (1 / 3)
    assert 0.3 * spacing < float(m.scales.detach().median()) < 1.5 * spacing


def test_init_is_deterministic_per_seed() -> None:
    a, b, c = _model(500, 1), _model(500, 1), _model(500, 2)
    for name in gaussians.PARAM_NAMES:
        assert torch.equal(a.params[name], b.params[name])
    assert not torch.equal(a.means, c.means)


def test_knn_scale_is_chunked_and_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    pts = torch.rand(300, 3, generator=torch.Generator().manual_seed(3))
    d2 = torch.cdist(pts, pts).square() + torch.eye(300) * 1e9
    expected = d2.topk(3, largest=False).values.mean(1).sqrt()
    monkeypatch.setattr(gaussians, "KNN_CHUNK_ELEMENTS", 300 * 7)  # 7 rows per chunk, ragged tail
    assert torch.allclose(mean_knn_distance(pts), expected, atol=1e-6)


def test_densification_stats_convert_pixel_gradients_to_ndc() -> None:
    m = _model(4)
    means2d = torch.zeros(2, 4, 2, requires_grad=True)
    (means2d * torch.tensor([[[1.0, 0.0]] * 4, [[0.0, 2.0]] * 4])).sum().backward()
    radii = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]])
    m.add_densification_stats(means2d, radii, width=64, height=32)
    # camera 0: |1 * 64/2 * 2| = 64; camera 1: |2 * 32/2 * 2| = 64; invisible pairs skipped
    assert m.grad_accum.tolist() == [128.0, 64.0, 64.0, 0.0]
    assert m.grad_count.tolist() == [2.0, 1.0, 1.0, 0.0]


def test_densify_clones_small_splits_large_and_moves_adam_state() -> None:
    m = _model(100)
    _train_one_step(m)
    with torch.no_grad():
        m.params["scales"][:50] = math.log(0.01)  # small: cloned
        m.params["scales"][50:] = math.log(0.1)  # large: split
        m.params["opacities"][:] = 2.0  # nobody faint
    before = {k: v.detach().clone() for k, v in m.params.items()}
    moments = {k: m.optimizer.state[p]["exp_avg"].clone() for k, p in m.params.items()}
    m.grad_accum[:] = 0.0
    m.grad_accum[[0, 1, 60]] = 1.0
    m.grad_count[:] = 1.0

    result = m.densify_and_prune(0.5, 0.04, 0.01, 10.0, 10_000, torch.Generator().manual_seed(0))

    assert (result.cloned, result.split, result.pruned, result.total) == (2, 1, 0, 100 + 2 + 1)
    assert len(m) == 103
    kept = torch.ones(100, dtype=torch.bool)
    kept[60] = False  # a split removes its parent
    assert torch.equal(m.means.detach()[:99], before["means"][kept])
    assert torch.equal(m.means.detach()[99:101], before["means"][[0, 1]])  # clones sit on parents
    children = m.means.detach()[101:]
    assert float((children - before["means"][60]).norm(dim=1).max()) < 0.5  # drawn from the parent
    assert torch.allclose(m.scales.detach()[101:], torch.full((2, 3), 0.1 / 1.6))
    # optimiser state followed the rows; new rows start with zero moments
    opt = m.optimizer
    for name, p in m.params.items():
        group = next(g for g in opt.param_groups if g["name"] == name)
        assert group["params"][0] is p
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
        assert torch.equal(state["exp_avg"][:99], moments[name][kept])
        assert not state["exp_avg"][99:].any()
    assert len(opt.state) == len(gaussians.PARAM_NAMES)  # no orphaned state of old tensors
    _train_one_step(m)  # Adam runs on the rebuilt tensors
    assert m.grad_accum.shape == (103,) and not m.grad_accum.any()


def test_densify_prunes_faint_and_huge_and_respects_the_cap() -> None:
    m = _model(50)
    _train_one_step(m)
    with torch.no_grad():
        m.params["opacities"][:] = 2.0
        m.params["opacities"][:5] = -10.0  # faint
        m.params["scales"][:] = math.log(0.01)
        m.params["scales"][5:8] = math.log(2.0)  # huge
    m.grad_accum[:] = torch.arange(50, dtype=torch.float32)
    m.grad_count[:] = 1.0
    result = m.densify_and_prune(1.0, 0.04, 0.01, 0.5, max_gaussians=54)
    # 49 candidates, but the cap leaves room for 4: the 4 largest gradients (ids 46..49) are cloned
    assert (result.cloned, result.split, result.pruned) == (4, 0, 8)
    assert len(m) == 50 + 4 - 8
    assert float(m.opacities.detach().min()) >= 0.01 and float(m.scales.detach().max()) <= 0.5
    assert all(m.optimizer.state[p]["exp_avg"].shape[0] == 46 for p in m.params.values())


def test_grow_to_min_splits_the_largest_until_the_target() -> None:
    m = _model(300)
    _train_one_step(m)
    largest_before = float(m.scales.detach().max())
    added = m.grow_to(1000, torch.Generator().manual_seed(0))  # needs more than one round
    assert added == 700 and len(m) == 1000
    assert float(m.scales.detach().max()) < largest_before
    assert all(m.optimizer.state[p]["exp_avg"].shape[0] == 1000 for p in m.params.values())
    assert m.grow_to(10) == 0 and len(m) == 1000


def test_to_splats_exports_pre_activation_values_that_pass_the_gate() -> None:
    m = _model(7000)
    _train_one_step(m)  # moves rotations off the identity
    s = m.to_splats()
    assert len(s) == 7000 and s.sh_degree == 0
    assert s.positions.dtype == np.float32
    assert np.allclose(s.alphas(), m.opacities.detach().numpy(), atol=1e-6)
    assert np.allclose(np.linalg.norm(s.rotations, axis=1), 1.0, atol=1e-5)
    assert check_gate(s).passed
    back = GaussianModel.from_splats(s)
    assert torch.allclose(back.means, m.means.detach())


def test_from_splats_of_a_real_file_renders_the_same_values(vectors_dir) -> None:
    splats = read_ply((vectors_dir / "hamburger.ply").read_bytes())
    m = GaussianModel.from_splats(splats)
    assert len(m) == 52_709
    assert np.allclose(m.colors.detach().numpy(), np.clip(splats.rgb(), 0, None), atol=1e-6)
    assert np.allclose(m.to_splats().positions, splats.positions)


def test_densification_stats_equal_the_indexed_accumulation() -> None:
    g = torch.Generator().manual_seed(0)
    model = GaussianModel.random_init(50, g)
    means2d = torch.zeros(4, 50, 2, requires_grad=True)
    means2d.grad = torch.randn(4, 50, 2, generator=g)
    radii = (torch.rand(4, 50, generator=g) > 0.3).int() * 3
    model.add_densification_stats(means2d, radii, 64, 48)
    # the former formulation: nonzero() ids and index_add_ (a host sync per step)
    grads = means2d.grad.clone()
    grads[..., 0] *= 64 / 2.0 * 4
    grads[..., 1] *= 48 / 2.0 * 4
    visible = radii > 0
    ids = torch.nonzero(visible)[:, 1]
    accum = torch.zeros(50).index_add_(0, ids, grads[visible].norm(dim=-1))
    count = torch.zeros(50).index_add_(0, ids, torch.ones(len(ids)))
    assert torch.allclose(model.grad_accum, accum, rtol=1e-5) and torch.equal(model.grad_count, count)


def test_fused_adam_is_asked_for_on_cuda_only() -> None:
    model = GaussianModel.random_init(10, torch.Generator().manual_seed(0))
    assert not model.setup_optimizer(LearningRates(), fused=True).defaults["fused"]


def _fused_on_cpu(opt: torch.optim.Optimizer) -> None:
    for group in opt.param_groups:  # setup_optimizer fuses only on CUDA; torch's fused Adam runs on CPU too
        group["fused"] = True


def test_adam_step_together_is_each_optimisers_own_fused_step() -> None:
    """Several jobs' fused Adam steps merged into a launch per hyperparameter set give every job
    exactly what its own step() gives: across densification surgery, and with the position lr
    differing between jobs (so those tensors go in separate launches)."""
    lrs = LearningRates()
    own = [_model(n, seed=k) for k, n in enumerate((300, 120, 200))]
    merged = [_model(n, seed=k) for k, n in enumerate((300, 120, 200))]
    for m in own + merged:
        _fused_on_cpu(m.setup_optimizer(lrs))
    for step in range(1, 5):
        for k, (a, b) in enumerate(zip(own, merged, strict=True)):
            a.update_learning_rate(step + k, 10)  # each job at its own point of the schedule
            b.update_learning_rate(step + k, 10)
            for m in (a, b):
                weights = torch.Generator().manual_seed(100 * step + k)
                loss = sum((t * torch.rand(t.shape, generator=weights)).sum() for t in m.params.values())
                loss.backward()
        for a in own:
            assert a.optimizer is not None
            a.optimizer.step()
        gaussians.adam_step_together([b.optimizer for b in merged if b.optimizer is not None])
        for m in own + merged:
            assert m.optimizer is not None
            m.optimizer.zero_grad(set_to_none=True)
        if step == 2:  # same surgery on both copies: prune the first tenth of every model
            for m in own + merged:
                keep = torch.ones(len(m), dtype=torch.bool)
                keep[: len(m) // 10] = False
                m._rebuild(keep, None)
    for a, b in zip(own, merged, strict=True):
        assert a.optimizer is not None and b.optimizer is not None
        for name in gaussians.PARAM_NAMES:
            pa, pb = a.params[name], b.params[name]
            assert torch.equal(pa, pb), name
            sa, sb = a.optimizer.state[pa], b.optimizer.state[pb]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[key], sb[key]), (name, key)
        assert float(b.optimizer.state[b.params["means"]]["step"]) == 4
        assert not torch.equal(a.params["means"], _model(len(a), seed=0).params["means"][: len(a)])


def test_adam_step_together_steps_unfused_optimisers_on_their_own() -> None:
    m = _model(100)
    before = m.params["means"].detach().clone()
    opt = m.setup_optimizer(LearningRates())  # CPU: not fused
    m.params["means"].sum().backward()
    gaussians.adam_step_together([opt])
    assert not torch.equal(m.params["means"].detach(), before)
    assert float(opt.state[m.params["means"]]["step"]) == 1
