"""The validator's final score from its parts (numpy, torch-free), and the miner's verdict.

Read from 404-Repo/three-gen-subnet (head of October 2025):
- validation/engine/validation_engine.py (_compute_final_score, validate_text_to_gs):
  score = 0 when alignment < 0.3, else
  0.75 * iqa + 0.2 * alignment + 0.025 * sigmoid(ssim, 35, 0.83) + 0.025 * lpips * sigmoid(lpips, 30, 0.7),
  where alignment is the CLIP geometric mean / 0.35 (not capped);
- validation/engine/utils/gs_data_checker_utils.py (sigmoid): 1 / (1 + exp(-slope * (x - shift)));
- validation/engine/metrics/similarity_scorer.py: SSIM and LPIPS of each view with the next one
  (16 pairs, the last with the first), outlier filter, geometric mean; lpips = 1 - that mean;
- validation/engine/utils/statistics_computation_utils.py (compute_mean): the geometric mean is
  exp(mean(log x)) with torch's rules (a 0 gives 0, a negative gives nan).
- validation/engine/metrics/quality_scorer.py: iqa is the plain mean of the per-view quality
  probabilities (no outlier filter).
The acceptance threshold (0.6) is the subnet validator's (404-reference.md, section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.scoring.alignment import MIN_ALIGNMENT, knn_outlier_mask

IQA_WEIGHT = 0.75
ALIGNMENT_WEIGHT = 0.2
SSIM_WEIGHT = 0.025
SSIM_SLOPE, SSIM_SHIFT = 35.0, 0.83
LPIPS_WEIGHT = 0.025
LPIPS_SLOPE, LPIPS_SHIFT = 30.0, 0.7
ACCEPT_THRESHOLD = 0.6


def sigmoid(x: float, slope: float = 1.0, shift: float = 0.0) -> float:
    return 1.0 / (1.0 + math.exp(-slope * (x - shift)))


def torch_style_geometric_mean(values: np.ndarray) -> float:
    """exp(mean(log v)) as compute_mean(..., "geometric_mean"): 0 if a value is 0, nan if one is
    negative or there are none."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.exp(np.mean(np.log(v)))) if v.size else float("nan")


@dataclass(frozen=True)
class PairMean:
    pairs: list[float]  # per neighbouring pair (view i with view i+1, the last with the first)
    kept: list[bool]  # survived the outlier filter
    mean: float  # geometric mean of the kept values


def neighbour_mean(pairs: np.ndarray | list[float]) -> PairMean:
    """The outlier filter and geometric mean the validator applies to SSIM and LPIPS pairs."""
    p = np.asarray(pairs, dtype=np.float64).reshape(-1)
    kept = knn_outlier_mask(p)
    return PairMean([float(x) for x in p], [bool(k) for k in kept], torch_style_geometric_mean(p[kept]))


def final_score(alignment_raw: float, iqa: float, ssim: float, lpips: float) -> float:
    """The validator's final score. `lpips` is its reported value (1 - mean distance).
    A non-finite part (nan SSIM from a negative pair) scores 0 where the validator would send nan."""
    if not alignment_raw >= MIN_ALIGNMENT:  # also catches nan
        return 0.0
    score = (
        IQA_WEIGHT * iqa
        + ALIGNMENT_WEIGHT * alignment_raw
        + SSIM_WEIGHT * sigmoid(ssim, SSIM_SLOPE, SSIM_SHIFT)
        + LPIPS_WEIGHT * lpips * sigmoid(lpips, LPIPS_SLOPE, LPIPS_SHIFT)
    )
    return float(score) if math.isfinite(score) else 0.0


def verdict(
    gate_passed: bool, gate_reason: str, alignment_raw: float | None, score: float
) -> tuple[bool, str]:
    """(accepted, why not): accepted at score >= 0.6, as the subnet validator counts a result."""
    if not gate_passed:
        return False, f"gate failed: {gate_reason}"
    if alignment_raw is None or not alignment_raw >= MIN_ALIGNMENT:
        shown = "n/a" if alignment_raw is None else f"{alignment_raw:.3f}"
        return False, f"alignment {shown} < {MIN_ALIGNMENT}: the validator scores 0"
    if score < ACCEPT_THRESHOLD:
        return False, f"score {score:.3f} < {ACCEPT_THRESHOLD}"
    return True, ""
