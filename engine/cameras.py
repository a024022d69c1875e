"""Orbit cameras: the validator's fixed views and the generator's random view groups.

Numpy-only (torch is imported lazily by `camera_tensors`). Conventions, as the 404 validator
(three-gen-subnet `OrbitCamera.compute_transform_orbit`, 404-reference section 5):

- position x = r cos(phi) sin(theta), y = -r sin(phi), z = r cos(phi) cos(theta) for elevation
  phi and azimuth theta, so a negative elevation puts the camera above the object;
- `orbit_c2w` is an OpenGL camera-to-world (camera looks down its -z, +y up) aimed at the origin;
- `c2w_to_viewmat` flips the camera's y and z axes to OpenCV (what gsplat expects) and inverts;
- intrinsics fx = fy = W / (2 tan(fovy / 2)), cx = W // 2, cy = H // 2 (integer centre, as the
  validator; note this is not W / 2 for odd sizes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import torch

_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def orbit_position(elevation_deg: ArrayLike, azimuth_deg: ArrayLike, radius: ArrayLike) -> np.ndarray:
    """Camera centres on the validator's orbit, (..., 3) float64 for matching arrays ((3,) for
    scalars)."""
    phi = np.deg2rad(np.asarray(elevation_deg, np.float64))
    theta = np.deg2rad(np.asarray(azimuth_deg, np.float64))
    r = np.asarray(radius, np.float64)
    return np.stack([r * np.cos(phi) * np.sin(theta), -r * np.sin(phi), r * np.cos(phi) * np.cos(theta)], -1)


def look_at_c2w(campos: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """OpenGL camera-to-world (..., 4, 4) float64 at `campos` (..., 3) looking at `target` (3,),
    world +y up. Array math over all cameras at once: a view plan holds thousands."""
    target = np.zeros(3) if target is None else np.asarray(target, np.float64)
    campos = np.asarray(campos, np.float64)
    forward = _normalize(campos - target)  # camera +z points away from the target (OpenGL)
    right = _normalize(np.cross([0.0, 1.0, 0.0], forward))
    up = _normalize(np.cross(forward, right))
    c2w = np.zeros((*campos.shape[:-1], 4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, up, forward, campos
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_c2w(elevation_deg: ArrayLike, azimuth_deg: ArrayLike, radius: ArrayLike) -> np.ndarray:
    """OpenGL camera-to-world (4,4) float64 on the validator's orbit, looking at the origin;
    (..., 4, 4) for matching arrays."""
    return look_at_c2w(orbit_position(elevation_deg, azimuth_deg, radius))


def c2w_to_viewmat(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (...,4,4) -> OpenCV world-to-camera (...,4,4), the `viewmats` of
    `engine.render.rasterize`."""
    c2w = np.asarray(c2w, np.float64)
    return np.linalg.inv(c2w @ _OPENGL_TO_OPENCV)


def intrinsics(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole K (3,3) float64 the way the validator builds it (fx uses W, fy uses H)."""
    tan_half = np.tan(0.5 * np.deg2rad(fovy_deg))
    k = np.eye(3)
    k[0, 0] = width / (2.0 * tan_half)
    k[1, 1] = height / (2.0 * tan_half)
    k[0, 2] = width // 2
    k[1, 2] = height // 2
    return k


class ViewSet(NamedTuple):
    """A batch of cameras ready for `rasterize` (numpy float32)."""

    viewmats: np.ndarray  # (C,4,4) world->camera, OpenCV
    Ks: np.ndarray  # (C,3,3)
    width: int
    height: int
    c2w: np.ndarray  # (C,4,4) camera->world, OpenGL


def views(
    elevations_deg: np.ndarray,
    azimuths_deg: np.ndarray,
    radii: np.ndarray | float,
    fovy: float,
    width: int,
    height: int,
) -> ViewSet:
    """Orbit views for matching arrays of elevation / azimuth / radius."""
    elev, azim, rad = np.broadcast_arrays(
        np.asarray(elevations_deg, np.float64), np.asarray(azimuths_deg, np.float64), radii
    )
    c2w = orbit_c2w(elev.ravel(), azim.ravel(), rad.ravel())
    k = np.broadcast_to(intrinsics(fovy, width, height), (len(c2w), 3, 3))
    return ViewSet(
        viewmats=c2w_to_viewmat(c2w).astype(np.float32),
        Ks=k.astype(np.float32),
        width=width,
        height=height,
        c2w=c2w.astype(np.float32),
    )


def validator_views(
    n: int = 16, elevation: float = -15.0, radius: float = 2.5, fovy: float = 49.1, size: int = 518
) -> ViewSet:
    """The validator's scoring views: azimuth linspace(0, 360, n) (0 and 360 both included, as
    the validator does), fixed elevation and radius, square images."""
    azimuths = np.linspace(0.0, 360.0, n)
    return views(np.full(n, elevation), azimuths, radius, fovy, size, size)


def sample_orbit_group(
    rng: np.random.Generator | torch.Generator | int | None,
    batch_size: int,
    radius_range: tuple[float, float] = (2.5, 3.5),
    elevation_range: tuple[float, float] = (-30.0, 30.0),
    fovy: float = 49.1,
) -> np.ndarray:
    """Random training cameras: OpenGL c2w (batch_size,4,4) float32 in groups of 4.

    Each group shares one elevation (uniform in `elevation_range`) and radius (uniform in
    `radius_range`); its 4 views sit at azimuths a, a+90, a+180, a+270 (a uniform in
    [-180, 180), wrapped back to that range), the frame order MVDream's 4-view model expects.
    The c2w use this module's OpenGL convention; MVDream's camera embedding wants Blender axes
    and a unit-length translation, a conversion that belongs to the guidance. `fovy` does not
    change the poses: build intrinsics with `intrinsics(fovy, W, H)` at the render size.
    """
    if not 0.0 < fovy < 180.0:
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fovy}")
    views = orbit_group_views(rng, batch_size, radius_range, elevation_range)
    return orbit_c2w(views[:, 0], views[:, 1], views[:, 2]).astype(np.float32)


def orbit_group_views(
    rng: np.random.Generator | torch.Generator | int | None,
    batch_size: int,
    radius_range: tuple[float, float] = (2.5, 3.5),
    elevation_range: tuple[float, float] = (-30.0, 30.0),
) -> np.ndarray:
    """The draws behind `sample_orbit_group`: (batch_size, 3) elevation, azimuth, radius per view
    (its random numbers, in its order), so many steps' poses can be built in one `orbit_c2w`."""
    if batch_size <= 0 or batch_size % 4:
        raise ValueError(f"batch_size must be a positive multiple of 4, got {batch_size}")
    groups = batch_size // 4
    u = _uniform(rng, (groups, 3))
    elev = elevation_range[0] + u[:, 0] * (elevation_range[1] - elevation_range[0])
    radius = radius_range[0] + u[:, 1] * (radius_range[1] - radius_range[0])
    azim0 = -180.0 + 360.0 * u[:, 2]
    azim = (azim0[:, None] + 90.0 * np.arange(4)[None, :] + 180.0) % 360.0 - 180.0
    return np.stack([np.repeat(elev, 4), azim.ravel(), np.repeat(radius, 4)], -1)


def camera_tensors(
    c2w: np.ndarray, fovy: float, width: int, height: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats (C,4,4), Ks (C,3,3)) float32 torch tensors for `rasterize` from OpenGL c2w."""
    import torch

    c2w = np.asarray(c2w, np.float64).reshape(-1, 4, 4)
    viewmats = torch.as_tensor(c2w_to_viewmat(c2w), dtype=torch.float32, device=device)
    k = torch.as_tensor(intrinsics(fovy, width, height), dtype=torch.float32, device=device)
    return viewmats, k.expand(len(c2w), 3, 3).contiguous()


def _normalize(v: np.ndarray, eps: float = 1e-20) -> np.ndarray:
    """Unit vectors along the last axis."""
    return v / np.sqrt(np.maximum(np.sum(v * v, axis=-1, keepdims=True), eps))


def _uniform(rng: np.random.Generator | torch.Generator | int | None, shape: tuple[int, ...]) -> np.ndarray:
    """U[0,1) draws from a numpy Generator / seed, or from a torch.Generator (checked by duck type
    so this module stays importable without torch)."""
    if type(rng).__name__ == "Generator" and type(rng).__module__.startswith("torch"):
        import torch

        return torch.rand(shape, generator=cast("torch.Generator", rng), dtype=torch.float64).numpy()
    return np.random.default_rng(cast("np.random.Generator | int | None", rng)).random(shape)
