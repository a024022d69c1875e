"""The validator's alignment formula on known cosines: outlier filter, clip, geometric mean, /0.35, cap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.scoring.alignment import (
    alignment_from_cosines,
    geometric_mean,
    knn_outlier_mask,
)


def _pytod_style_mask(values: np.ndarray) -> np.ndarray:
    """The subnet's path written with the same primitives pytod 0.0.3 uses (torch.cdist, topk of
    k+1 smallest including self, numpy percentile, strict >), on the sorted column vector."""
    order = np.argsort(values, kind="stable")
    col = torch.tensor(values[order], dtype=torch.float32).reshape(-1, 1)
    dist = torch.cdist(col, col, p=2.0)
    kth = torch.topk(dist, 6, dim=1, largest=False).values[:, -1].numpy()
    outlier_sorted = kth > np.percentile(kth, 90.0)
    keep = np.ones(values.size, dtype=bool)
    keep[order[outlier_sorted]] = False
    return keep


def test_evenly_spaced_views_drop_both_ends() -> None:
    # 5th-nearest distances are 5,4,3..3,4,5 steps: the 90th percentile is 4.5 steps
    cos = np.linspace(0.10, 0.40, 16)
    result = alignment_from_cosines(cos)
    assert result.kept == [False] + [True] * 14 + [False]
    expected = math.exp(np.mean(np.log(cos[1:-1])))
    assert result.geometric_mean == pytest.approx(expected, rel=1e-6)
    assert result.alignment_raw == pytest.approx(expected / 0.35, rel=1e-6)
    assert result.alignment == pytest.approx(expected / 0.35, rel=1e-6)


def test_far_outliers_are_removed_before_the_mean() -> None:
    cos = np.array([0.28] * 14 + [-0.2, 0.9], dtype=np.float32)
    rng = np.random.default_rng(0)
    rng.shuffle(cos)
    result = alignment_from_cosines(cos)
    dropped = sorted(c for c, k in zip(result.cosines, result.kept, strict=True) if not k)
    assert dropped == pytest.approx([-0.2, 0.9])
    assert result.geometric_mean == pytest.approx(0.28, rel=1e-6)
    assert result.alignment == pytest.approx(0.8, rel=1e-6)
    # without the filter the negative view clips to 0 and the geometric mean collapses
    assert alignment_from_cosines(cos, filter_outliers=False).alignment == 0.0


def test_negative_view_kept_by_the_filter_zeroes_the_score() -> None:
    cos = np.array([0.3] * 8 + [-0.001] * 8, dtype=np.float32)  # two equal clusters: no outliers
    result = alignment_from_cosines(cos)
    assert all(result.kept)
    assert result.geometric_mean == 0.0
    assert result.alignment == 0.0


def test_cap_at_one_but_raw_value_kept() -> None:
    result = alignment_from_cosines([0.5] * 16)
    assert all(result.kept)
    assert result.alignment_raw == pytest.approx(0.5 / 0.35)
    assert result.alignment == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_filter_matches_the_pytod_rule_on_random_cosines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cos = rng.normal(0.27, 0.04, 16).astype(np.float32)
    if seed % 3 == 0:
        cos[rng.integers(16)] = 0.02  # a broken view
    mask = knn_outlier_mask(cos)
    np.testing.assert_array_equal(mask, _pytod_style_mask(cos))
    assert 1 <= (~mask).sum() <= 3


def test_geometric_mean_edges() -> None:
    assert geometric_mean(np.array([0.25, 1.0])) == pytest.approx(0.5)
    assert geometric_mean(np.array([0.0, 1.0])) == 0.0
    assert math.isnan(geometric_mean(np.array([])))
    with pytest.raises(ValueError):
        alignment_from_cosines([])
