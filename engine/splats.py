"""The one in-memory splat type the whole engine uses (numpy, torch-free).

Values are stored *before activation*, exactly as in a 404 PLY (404-reference section 2):
opacity is a logit, scales are logs, rotations are (w, x, y, z) quaternions that need not be
unit length, colours are SH DC coefficients (rgb = 0.5 + C0 * f_dc).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814


def sh_coeffs_for_degree(degree: int) -> int:
    """Number of higher-order SH coefficients per channel (f_rest count / 3)."""
    return (degree + 1) ** 2 - 1


def sh_degree_for_coeffs(count: int) -> int:
    """Inverse of sh_coeffs_for_degree; raises ValueError for a count no degree gives."""
    for degree in range(4):
        if sh_coeffs_for_degree(degree) == count:
            return degree
    raise ValueError(f"{count} higher-order SH coefficients per channel matches no SH degree 0..3")


@dataclass
class Splats:
    positions: np.ndarray  # (N, 3) float32
    sh_dc: np.ndarray  # (N, 3) float32, f_dc_0..2
    sh_rest: np.ndarray  # (N, K, 3) float32, K = (deg+1)^2 - 1, colour channel innermost
    opacities: np.ndarray  # (N,) float32, logit
    scales: np.ndarray  # (N, 3) float32, log
    rotations: np.ndarray  # (N, 4) float32, (w, x, y, z)

    def __post_init__(self) -> None:
        n = self.positions.shape[0]
        shapes = {
            "positions": (self.positions, (n, 3)),
            "sh_dc": (self.sh_dc, (n, 3)),
            "opacities": (self.opacities, (n,)),
            "scales": (self.scales, (n, 3)),
            "rotations": (self.rotations, (n, 4)),
        }
        for name, (arr, shape) in shapes.items():
            if arr.shape != shape:
                raise ValueError(f"Splats.{name} has shape {arr.shape}, expected {shape}")
        if self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3:
            raise ValueError(f"Splats.sh_rest has shape {self.sh_rest.shape}, expected ({n}, K, 3)")
        sh_degree_for_coeffs(self.sh_rest.shape[1])

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_for_coeffs(self.sh_rest.shape[1])

    # Activated views, for renderers and statistics.
    def alphas(self) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-self.opacities.astype(np.float64)))).astype(np.float32)

    def linear_scales(self) -> np.ndarray:
        return np.exp(self.scales.astype(np.float64)).astype(np.float32)

    def unit_rotations(self) -> np.ndarray:
        norm = np.linalg.norm(self.rotations, axis=1, keepdims=True)
        return (self.rotations / np.maximum(norm, 1e-12)).astype(np.float32)

    def rgb(self) -> np.ndarray:
        return (0.5 + SH_C0 * self.sh_dc).astype(np.float32)

    @classmethod
    def empty(cls, n: int = 0, sh_degree: int = 0) -> Splats:
        k = sh_coeffs_for_degree(sh_degree)
        return cls(
            positions=np.zeros((n, 3), np.float32),
            sh_dc=np.zeros((n, 3), np.float32),
            sh_rest=np.zeros((n, k, 3), np.float32),
            opacities=np.zeros((n,), np.float32),
            scales=np.zeros((n, 3), np.float32),
            rotations=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        )
