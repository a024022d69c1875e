"""The validator's text-alignment formula, on per-view CLIP cosines (numpy, torch-free).

Read from the subnet's public code (404-Repo/three-gen-subnet, head of October 2025):
- validation/engine/metrics/alignment_scorer.py (TextVSImageMetric.score_text_alignment):
  cosines of the 16 views -> outlier filter -> clip to [0, 1] -> geometric mean;
- validation/engine/utils/statistics_computation_utils.py (filter_outliers, compute_mean):
  the filter is pytod's KNN detector with its defaults (n_neighbors=5, contamination=0.1)
  fitted on the sorted 1-D cosines; pytod 0.0.3 scores each value by the distance to its
  5th nearest other value and flags scores strictly above the 90th percentile (numpy,
  linear interpolation) as outliers;
- validation/engine/validation_engine.py (validate_text_to_gs): the mean is divided by 0.35.
Our code re-implements those rules; it copies none of theirs. The subnet does not cap the
alignment at 1; both values are reported (`alignment` capped for display, `alignment_raw` as the
subnet's, which the final formula in engine.scoring.formula uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KNN_NEIGHBORS = 5
KNN_CONTAMINATION = 0.1
ALIGNMENT_NORMALISER = 0.35
MIN_ALIGNMENT = 0.3  # the validator's final score is 0 below this (validation_engine.py)


@dataclass(frozen=True)
class Alignment:
    cosines: list[float]  # per view, in view order, before any filtering or clipping
    kept: list[bool]  # per view: False where the outlier filter dropped it
    geometric_mean: float  # of the kept cosines clipped to [0, 1]
    alignment_raw: float  # geometric_mean / 0.35: what the subnet reports
    alignment: float  # alignment_raw capped at 1


def knn_outlier_mask(
    values: np.ndarray, n_neighbors: int = KNN_NEIGHBORS, contamination: float = KNN_CONTAMINATION
) -> np.ndarray:
    """Boolean mask (in the input order), True for the values the validator keeps."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    n = x.size
    if n < 2:
        return np.ones(n, dtype=bool)
    distances = np.abs(x[:, None] - x[None, :])  # 1-D euclidean distances, self at 0
    k = min(n_neighbors, n - 1)
    kth = np.sort(distances, axis=1)[:, k]  # distance to the k-th nearest other value
    threshold = np.percentile(kth, 100.0 * (1.0 - contamination))
    return ~(kth > threshold)


def geometric_mean(values: np.ndarray) -> float:
    """exp(mean(log v)); 0 when any value is 0 (as exp(-inf) gives), nan for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan")
    if np.any(v <= 0.0):
        return 0.0
    return float(np.exp(np.mean(np.log(v))))


def alignment_from_cosines(cosines: np.ndarray | list[float], filter_outliers: bool = True) -> Alignment:
    """Apply the validator's rule to per-view cosines: filter, clip to [0, 1], geometric mean, / 0.35."""
    c = np.asarray(cosines, dtype=np.float32).reshape(-1)
    if c.size == 0:
        raise ValueError("no view cosines to score")
    kept = knn_outlier_mask(c) if filter_outliers else np.ones(c.size, dtype=bool)
    gm = geometric_mean(np.clip(c[kept], 0.0, 1.0))
    raw = gm / ALIGNMENT_NORMALISER
    return Alignment(
        cosines=[float(v) for v in c],
        kept=[bool(k) for k in kept],
        geometric_mean=gm,
        alignment_raw=raw,
        alignment=min(1.0, raw),
    )
