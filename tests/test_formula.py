"""The validator's final formula, its constants, the SSIM/LPIPS aggregation and the verdict
(engine.scoring.formula), on numbers worked out by hand from validation_engine.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.scoring import formula
from engine.scoring.formula import final_score, neighbour_mean, sigmoid, torch_style_geometric_mean, verdict


def test_constants_are_the_subnets() -> None:
    assert (formula.IQA_WEIGHT, formula.ALIGNMENT_WEIGHT) == (0.75, 0.2)
    assert (formula.SSIM_WEIGHT, formula.SSIM_SLOPE, formula.SSIM_SHIFT) == (0.025, 35.0, 0.83)
    assert (formula.LPIPS_WEIGHT, formula.LPIPS_SLOPE, formula.LPIPS_SHIFT) == (0.025, 30.0, 0.7)
    assert formula.ACCEPT_THRESHOLD == 0.6 and formula.MIN_ALIGNMENT == 0.3


def test_final_score_by_hand() -> None:
    # at the sigmoids' midpoints both sigmoids are 0.5
    expected = 0.75 * 0.8 + 0.2 * 0.9 + 0.025 * 0.5 + 0.025 * 0.7 * 0.5
    assert final_score(0.9, 0.8, 0.83, 0.7) == pytest.approx(expected, abs=1e-12)
    # alignment is used as given (the subnet does not cap it at 1)
    assert final_score(1.5, 0.8, 0.83, 0.7) - final_score(1.0, 0.8, 0.83, 0.7) == pytest.approx(0.1)
    s_hi = 1 / (1 + math.exp(-35 * (0.95 - 0.83)))
    l_hi = 1 / (1 + math.exp(-30 * (0.98 - 0.7)))
    assert final_score(0.5, 0.6, 0.95, 0.98) == pytest.approx(
        0.45 + 0.1 + 0.025 * s_hi + 0.025 * 0.98 * l_hi, abs=1e-12
    )


def test_alignment_below_point_three_zeroes_everything() -> None:
    assert final_score(0.2999, 1.0, 1.0, 1.0) == 0.0
    assert final_score(0.3, 0.0, 0.0, 0.0) > 0.0
    assert final_score(float("nan"), 1.0, 1.0, 1.0) == 0.0
    assert final_score(0.5, 0.8, float("nan"), 0.9) == 0.0  # nan SSIM: 0, not nan


def test_sigmoid() -> None:
    assert sigmoid(0.83, 35, 0.83) == 0.5
    assert sigmoid(1.0, 35, 0.83) == pytest.approx(1 / (1 + math.exp(-35 * 0.17)))


def test_geometric_mean_follows_torch() -> None:
    assert torch_style_geometric_mean(np.array([0.25, 1.0])) == pytest.approx(0.5)
    assert torch_style_geometric_mean(np.array([0.0, 0.5])) == 0.0  # log 0 = -inf, exp -> 0
    assert math.isnan(torch_style_geometric_mean(np.array([-0.1, 0.5])))  # log of a negative


def test_neighbour_mean_filters_then_averages() -> None:
    # 15 similar pairs and the last-with-first pair (same camera at 0 and 360 degrees) at 0
    pairs = np.r_[np.linspace(0.020, 0.034, 15), 0.0]
    m = neighbour_mean(pairs)
    assert m.kept[-1] is False  # the zero is an outlier: without the filter the mean would be 0
    assert m.mean == pytest.approx(float(np.exp(np.log(pairs[np.array(m.kept)]).mean())))
    assert 0.02 < m.mean < 0.034


def test_verdict_says_why() -> None:
    assert verdict(True, "", 0.9, 0.6) == (True, "")
    assert verdict(True, "", 0.9, 0.59)[1] == "score 0.590 < 0.6"
    assert "alignment 0.250 < 0.3" in verdict(True, "", 0.25, 0.0)[1]
    assert verdict(False, "too few splats", None, 0.0) == (False, "gate failed: too few splats")
