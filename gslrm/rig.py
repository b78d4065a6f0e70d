"""Normalization of a real camera rig into FaceLift's frame: Z-up, scene centre at the origin, mean distance 2.7.

A rig whose cameras sit 2.0-3.4 units away instead of FaceLift's 2.7 gets all-white predictions. Rescaling each
camera's position to 2.7 without touching the intrinsics breaks multi-view geometry, so the default here is
one similarity transform ``x' = s * R (x - c)`` applied to the whole rig, which keeps every reprojection exact.
``per_camera_zoom`` additionally moves each camera to exactly ``target_distance`` and scales fx, fy by
``target / d`` so the object keeps its size in the image: an approximation that is only exact for points at the
centre, offered because it is what FaceLift's pretraining distribution looks like.

All arithmetic is float64 numpy: this runs in the data pipeline, once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["NormalizationConfig", "RigTransform", "fit_rig_transform", "optical_axes_center", "rotation_between"]


@dataclass
class NormalizationConfig:
    enabled: bool = True
    # world up as a vector in the raw calibration frame; None = normal of the best-fit plane of the camera centres,
    # signed to agree with the cameras' mean up (-y) axis
    up: list[float] | None = None
    target_distance: float = 2.7
    per_camera_zoom: bool = False


@dataclass
class RigTransform:
    """``x' = scale * rotation @ (x - center)``; applied to camera->world matrices by :meth:`apply`."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    axis_residual_rms: float = 0.0  # RMS distance of the scene centre to the optical axes, in raw units
    per_camera_zoom: bool = False
    target_distance: float = 2.7

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        return self.scale * (points - self.center) @ self.rotation.T

    def apply(self, c2w: np.ndarray, fxfycxcy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Transform ``c2w [V,4,4]`` and ``fxfycxcy [V,4]``; returns new arrays (float64)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        intrinsics = np.array(fxfycxcy, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.rotation @ out[:, :3, :3]
        out[:, :3, 3] = self.apply_points(out[:, :3, 3])
        if self.per_camera_zoom:
            distance = np.linalg.norm(out[:, :3, 3], axis=-1)
            zoom = self.target_distance / distance
            out[:, :3, 3] *= zoom[:, None]
            intrinsics[:, :2] *= zoom[:, None]
        return out, intrinsics

    def depth_scale(self) -> float:
        """Factor for z-depth maps (exact for the similarity; per-camera zoom changes depth non-uniformly)."""
        return self.scale


def rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``source`` to ``target`` (Rodrigues)."""
    a = source / np.linalg.norm(source)
    b = target / np.linalg.norm(target)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-12:  # opposite: rotate by pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def optical_axes_center(c2w: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point closest to all optical axes and the RMS distance from it to the axes.

    Minimizes sum_i |(I - d_i d_i^T)(x - o_i)|^2, i.e. solves (sum P_i) x = sum P_i o_i.
    """
    origins = c2w[:, :3, 3]
    axes = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=-1, keepdims=True)
    projectors = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    system = projectors.sum(0)
    if np.linalg.cond(system) > 1e8:
        raise ValueError("optical axes are (nearly) parallel: the scene centre is undetermined; set the rig centre")
    center = np.linalg.solve(system, np.einsum("vij,vj->i", projectors, origins))
    offsets = np.einsum("vij,vj->vi", projectors, center[None] - origins)
    return center, float(np.sqrt((offsets**2).sum(-1).mean()))


def estimate_up(c2w: np.ndarray) -> np.ndarray:
    """Normal of the best-fit plane of the camera centres, signed to agree with the cameras' mean up (-y)."""
    centres = c2w[:, :3, 3]
    mean_up = -c2w[:, :3, 1].mean(0)
    if len(centres) < 3:
        return mean_up / np.linalg.norm(mean_up)
    _, _, vt = np.linalg.svd(centres - centres.mean(0))
    normal = vt[-1]
    return normal if np.dot(normal, mean_up) >= 0 else -normal


def fit_rig_transform(c2w: np.ndarray, config: NormalizationConfig) -> RigTransform:
    """Fit the similarity that puts this rig into FaceLift's frame (see the module docstring)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if not config.enabled:
        return RigTransform(target_distance=config.target_distance)
    up = np.asarray(config.up, dtype=np.float64) if config.up is not None else estimate_up(c2w)
    up = up / np.linalg.norm(up)
    rotation = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    center, residual = optical_axes_center(c2w)
    mean_distance = float(np.linalg.norm(c2w[:, :3, 3] - center, axis=-1).mean())
    return RigTransform(
        rotation=rotation,
        center=center,
        scale=config.target_distance / mean_distance,
        up=up,
        axis_residual_rms=residual,
        per_camera_zoom=config.per_camera_zoom,
        target_distance=config.target_distance,
    )
