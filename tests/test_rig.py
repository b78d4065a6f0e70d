import numpy as np
import pytest
import torch

from gslrm.cameras import turntable_cameras
from gslrm.rig import NormalizationConfig, fit_rig_transform, optical_axes_center, rotation_between


def facelift_ring(num_views=32, elevation=20.0):
    c2w, k = turntable_cameras(num_views, resolution=512, elevation_deg=elevation, dtype=torch.float64)
    return c2w.numpy(), k.numpy()


def uneven_rig():
    """6 cameras at distances 2.0-3.4 and elevations -30..75 looking at the origin, mean distance 2.7, Z-up."""
    from gslrm.cameras import look_at_c2w

    specs = [(2.0, -30, 10), (2.3, 5, 80), (3.4, 15, 150), (2.9, 40, 200), (2.2, 60, 260), (3.4, 75, 320)]
    scale = 2.7 / np.mean([s[0] for s in specs])
    positions = []
    for distance, elevation, azimuth in specs:
        el, az = np.radians(elevation), np.radians(azimuth)
        positions.append(distance * scale * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]))
    positions = torch.tensor(np.array(positions))
    return look_at_c2w(positions, torch.zeros_like(positions)).numpy()


def apply_similarity(c2w, rotation, translation, scale):
    out = c2w.copy()
    out[:, :3, :3] = rotation @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * c2w[:, :3, 3] @ rotation.T + translation
    return out


def test_facelift_ring_is_a_no_op():
    c2w, k = facelift_ring()
    transform = fit_rig_transform(c2w, NormalizationConfig())
    normalized, k2 = transform.apply(c2w, k)
    assert np.abs(normalized - c2w).max() < 1e-6
    assert np.abs(k2 - k).max() < 1e-9
    assert transform.axis_residual_rms < 1e-9


def test_known_similarity_is_recovered_exactly():
    original = uneven_rig()
    tilted_up = np.array([0.3, -0.4, 0.866])
    rotation = rotation_between(np.array([0.0, 0.0, 1.0]), tilted_up)  # Z -> tilted up (no yaw: recoverable)
    raw = apply_similarity(original, rotation, translation=np.array([120.0, -40.0, 310.0]), scale=95.0)  # mm-ish
    transform = fit_rig_transform(raw, NormalizationConfig(up=tilted_up.tolist()))
    normalized, _ = transform.apply(raw, np.tile([400.0, 400.0, 144.0, 128.0], (6, 1)))
    assert np.abs(normalized - original).max() < 1e-5
    assert abs(transform.scale - 1 / 95.0) < 1e-9


def test_any_rotation_is_recovered_up_to_yaw():
    original = uneven_rig()
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    raw = apply_similarity(original, rotation, np.array([1.0, 2.0, 3.0]), 0.37)
    normalized, _ = fit_rig_transform(raw, NormalizationConfig(up=(rotation @ [0, 0, 1.0]).tolist())).apply(
        raw, np.ones((6, 4))
    )
    # yaw-invariant quantities: heights, distances to the origin, relative rotations between cameras
    assert np.allclose(normalized[:, 2, 3], original[:, 2, 3], atol=1e-6)
    assert np.allclose(np.linalg.norm(normalized[:, :3, 3], axis=-1), np.linalg.norm(original[:, :3, 3], axis=-1))
    relative = lambda m: np.einsum("aji,bjk->abik", m[:, :3, :3], m[:, :3, :3])  # noqa: E731
    assert np.allclose(relative(normalized), relative(original), atol=1e-6)


def test_fitted_up_for_a_level_ring_and_mean_distance():
    c2w, k = facelift_ring(num_views=8, elevation=10.0)
    raw = apply_similarity(
        c2w, rotation_between(np.array([0, 0, 1.0]), np.array([0, 1.0, 0])), np.array([5, 5, 5.0]), 3.0
    )
    transform = fit_rig_transform(raw, NormalizationConfig())  # up fitted from the ring's plane
    normalized, _ = transform.apply(raw, k)
    assert np.allclose(transform.up, [0, 1, 0], atol=1e-9)
    assert np.allclose(normalized, c2w, atol=1e-6)


def test_optical_axes_centre_known_answer():
    # two cameras: one at (0,-1,0) looking +y, one at (1, 0, 1) looking -x: their axes pass (0,0,0) and (0,0,1);
    # the closest point to both lines is (0, 0, 0.5) and each axis is 0.5 away
    c2w = np.tile(np.eye(4), (2, 1, 1))
    c2w[0, :3, 2], c2w[0, :3, 3] = [0, 1, 0], [0, -1, 0]
    c2w[1, :3, 2], c2w[1, :3, 3] = [-1, 0, 0], [1, 0, 1]
    centre, residual = optical_axes_center(c2w)
    assert np.allclose(centre, [0, 0, 0.5])
    assert np.isclose(residual, 0.5)


def test_per_camera_zoom_moves_cameras_and_scales_focal():
    c2w = uneven_rig()
    k = np.tile([400.0, 410.0, 128.0, 128.0], (6, 1))
    distances = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    zoomed, k2 = fit_rig_transform(c2w, NormalizationConfig(per_camera_zoom=True)).apply(c2w, k)
    assert np.allclose(np.linalg.norm(zoomed[:, :3, 3], axis=-1), 2.7)
    assert np.allclose(k2[:, 0], 400.0 * 2.7 / distances) and np.allclose(k2[:, 1], 410.0 * 2.7 / distances)
    assert np.allclose(k2[:, 2:], k[:, 2:])


def test_parallel_axes_are_reported():
    c2w = np.tile(np.eye(4), (3, 1, 1))
    c2w[:, 0, 3] = [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="parallel"):
        optical_axes_center(c2w)
