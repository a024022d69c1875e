"""Orbit cameras: the validator's position formula, look-at, OpenCV view matrices, intrinsics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cameras import (
    c2w_to_viewmat,
    camera_tensors,
    intrinsics,
    orbit_c2w,
    sample_orbit_group,
    validator_views,
)


def project(point: np.ndarray, viewmat: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, float]:
    """World point -> (pixel xy, camera depth) through an OpenCV viewmat and K."""
    cam = viewmat[:3, :3] @ point + viewmat[:3, 3]
    return (k @ (cam / cam[2]))[:2], float(cam[2])


def test_orbit_position_follows_validator_formula() -> None:
    # x = r cos(phi) sin(theta), y = -r sin(phi), z = r cos(phi) cos(theta)
    np.testing.assert_allclose(orbit_c2w(0, 0, 2.5)[:3, 3], [0, 0, 2.5], atol=1e-12)
    np.testing.assert_allclose(orbit_c2w(0, 90, 2.0)[:3, 3], [2.0, 0, 0], atol=1e-12)
    # negative elevation puts the camera above the object (the validator's -15 degree views)
    pos = orbit_c2w(-15, 30, 3.0)[:3, 3]
    phi, theta = np.deg2rad(-15), np.deg2rad(30)
    np.testing.assert_allclose(
        pos, [3 * np.cos(phi) * np.sin(theta), -3 * np.sin(phi), 3 * np.cos(phi) * np.cos(theta)]
    )
    assert pos[1] > 0


def test_orbit_c2w_is_an_opengl_look_at_the_origin() -> None:
    c2w = orbit_c2w(-20, 123, 2.7)
    rot, pos = c2w[:3, :3], c2w[:3, 3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # OpenGL cameras look down -z: that axis points from the camera to the origin.
    np.testing.assert_allclose(rot @ [0, 0, -1], -pos / np.linalg.norm(pos), atol=1e-12)
    assert abs(rot[1, 0]) < 1e-12  # the right axis stays horizontal (world +y up)
    assert rot[1, 1] > 0  # camera up leans to world up


def test_viewmat_is_opencv_world_to_camera() -> None:
    # Camera at (2, 0, 0) looking at the origin: world -z is to its right, world +y is up.
    viewmat = c2w_to_viewmat(orbit_c2w(0, 90, 2.0))
    k = intrinsics(49.1, 100, 100)
    centre, depth = project(np.zeros(3), viewmat, k)
    np.testing.assert_allclose(centre, [50, 50], atol=1e-9)
    assert depth == pytest.approx(2.0)  # OpenCV: +z forward
    right, _ = project(np.array([0.0, 0.0, -0.5]), viewmat, k)
    above, _ = project(np.array([0.0, 0.5, 0.0]), viewmat, k)
    assert right[0] > 50 and right[1] == pytest.approx(50)
    assert above[1] < 50 and above[0] == pytest.approx(50)  # image y grows downwards
    np.testing.assert_allclose(
        np.linalg.inv(viewmat) @ np.diag([1, -1, -1, 1]), orbit_c2w(0, 90, 2.0), atol=1e-12
    )


def test_intrinsics_use_the_validator_integer_centre() -> None:
    k = intrinsics(49.1, 518, 518)
    assert k[0, 0] == pytest.approx(518 / (2 * np.tan(np.deg2rad(49.1) / 2)))
    assert k[0, 0] == pytest.approx(k[1, 1])
    assert (k[0, 2], k[1, 2]) == (259, 259)
    k_odd = intrinsics(49.1, 271, 135)
    assert (k_odd[0, 2], k_odd[1, 2]) == (135, 67)  # W // 2, H // 2, not W / 2
    assert k_odd[1, 1] == pytest.approx(135 / (2 * np.tan(np.deg2rad(49.1) / 2)))


def test_validator_views() -> None:
    views = validator_views()
    assert views.viewmats.shape == (16, 4, 4) and views.Ks.shape == (16, 3, 3)
    assert (views.width, views.height) == (518, 518)
    positions = views.c2w[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(positions, axis=1), 2.5, rtol=1e-6)
    np.testing.assert_allclose(positions[:, 1], 2.5 * np.sin(np.deg2rad(15)), rtol=1e-6)
    # linspace(0, 360, 16) includes both ends, as the validator's: first and last views coincide
    np.testing.assert_allclose(views.viewmats[0], views.viewmats[-1], atol=1e-5)
    azimuths = np.rad2deg(np.arctan2(positions[:, 0], positions[:, 2])) % 360
    np.testing.assert_allclose(azimuths[1:-1], np.linspace(0, 360, 16)[1:-1], atol=1e-4)
    # every view sees the origin at its principal point
    for viewmat, k in zip(views.viewmats, views.Ks, strict=True):
        np.testing.assert_allclose(project(np.zeros(3), viewmat, k)[0], [259, 259], atol=1e-3)


def _orbit_angles(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = c2w[:, :3, 3].astype(np.float64)
    radius = np.linalg.norm(pos, axis=1)
    elevation = np.rad2deg(np.arcsin(-pos[:, 1] / radius))
    azimuth = np.rad2deg(np.arctan2(pos[:, 0], pos[:, 2]))
    return elevation, azimuth, radius


def test_sample_orbit_group_makes_groups_of_four_views_90_degrees_apart() -> None:
    c2w = sample_orbit_group(np.random.default_rng(3), 12, radius_range=(2.5, 3.5), elevation_range=(-30, 30))
    assert c2w.shape == (12, 4, 4) and c2w.dtype == np.float32
    elevation, azimuth, radius = _orbit_angles(c2w)
    assert np.all((radius >= 2.5 - 1e-5) & (radius <= 3.5 + 1e-5))
    assert np.all((elevation >= -30 - 1e-3) & (elevation <= 30 + 1e-3))
    groups_e, groups_a, groups_r = elevation.reshape(3, 4), azimuth.reshape(3, 4), radius.reshape(3, 4)
    np.testing.assert_allclose(groups_e, groups_e[:, :1].repeat(4, 1), atol=1e-3)
    np.testing.assert_allclose(groups_r, groups_r[:, :1].repeat(4, 1), rtol=1e-5)
    step = (np.diff(groups_a, axis=1) + 180) % 360 - 180  # frame i+1 is 90 degrees further round
    np.testing.assert_allclose(step, 90.0, atol=1e-3)
    assert len(np.unique(np.round(groups_e[:, 0], 3))) == 3  # groups differ from one another
    for pose in c2w:  # each is still a look-at of the origin
        np.testing.assert_allclose(
            pose[:3, :3] @ [0, 0, -1], -pose[:3, 3] / np.linalg.norm(pose[:3, 3]), atol=1e-5
        )


def test_sample_orbit_group_is_seeded_and_accepts_torch_generators() -> None:
    a = sample_orbit_group(np.random.default_rng(7), 8)
    b = sample_orbit_group(np.random.default_rng(7), 8)
    np.testing.assert_array_equal(a, b)
    t1 = sample_orbit_group(torch.Generator().manual_seed(1), 4)
    t2 = sample_orbit_group(torch.Generator().manual_seed(1), 4)
    t3 = sample_orbit_group(torch.Generator().manual_seed(2), 4)
    np.testing.assert_array_equal(t1, t2)
    assert not np.allclose(t1, t3)
    with pytest.raises(ValueError, match="multiple of 4"):
        sample_orbit_group(0, 6)


def test_camera_tensors_match_numpy_core() -> None:
    c2w = sample_orbit_group(np.random.default_rng(0), 4)
    viewmats, ks = camera_tensors(c2w, 49.1, 64, 48)
    assert viewmats.shape == (4, 4, 4) and ks.shape == (4, 3, 3) and viewmats.dtype == torch.float32
    np.testing.assert_allclose(viewmats.numpy(), c2w_to_viewmat(c2w), atol=1e-5)
    np.testing.assert_allclose(ks[2].numpy(), intrinsics(49.1, 64, 48), rtol=1e-6)
