"""The validator's validity gate (404-reference section 5): one rule, used everywhere.

A result scores 0 if it has fewer than 7000 Gaussians, more than 80% of opacities below 1e-3,
or all rotations identical to (1, 0, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.splats import Splats

MIN_GAUSSIANS = 7000
TRANSPARENT_ALPHA = 1e-3
MAX_TRANSPARENT_FRACTION = 0.8


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str


def check_gate(splats: Splats) -> GateVerdict:
    n = len(splats)
    if n < MIN_GAUSSIANS:
        return GateVerdict(False, f"too few Gaussians: {n} < {MIN_GAUSSIANS}")
    transparent = float(np.mean(splats.alphas() < TRANSPARENT_ALPHA))
    if transparent > MAX_TRANSPARENT_FRACTION:
        return GateVerdict(
            False,
            f"{transparent:.1%} of opacities below {TRANSPARENT_ALPHA:g} (limit {MAX_TRANSPARENT_FRACTION:.0%})",
        )
    identity = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    # as the validator: rotations normalised on load, then torch.allclose (rtol 1e-5, atol 1e-8)
    # (404-Repo/three-gen-subnet validation/engine/utils/gs_data_checker_utils.py)
    if np.allclose(splats.unit_rotations(), identity, rtol=1e-5, atol=1e-8):
        return GateVerdict(False, "all rotations are the identity (1, 0, 0, 0)")
    return GateVerdict(True, f"ok: {n} Gaussians, {transparent:.1%} transparent")
