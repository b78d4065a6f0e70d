"""Gaussians between the normalized training frame and the rig's own world frame (its calibration's units, e.g. mm).

The data pipeline maps the rig into FaceLift's frame with one similarity per sample, ``x' = s R (x - c)``
(``gslrm.rig.RigTransform``). Its inverse ``x = R^T x' / s + c`` takes a predicted Gaussian back to the rig: the mean
through the inverse, the scales divided by ``s`` (a similarity scales every axis alike), the orientation turned by
``R^T`` (covariance ``R^T Σ' R / s^2``: the quaternion becomes ``q(R^T) ⊗ q``). Opacities and the view-independent
colour do not change. Higher SH bands would have to be rotated too; the store keeps the degree-0 colour only.

All float64 numpy: the arithmetic of one frame costs microseconds next to the model, and fp64 keeps the round trip
at 1e-9.
"""

from __future__ import annotations

import numpy as np

from gslrm.rig import RigTransform

__all__ = [
    "world_from_normalized",
    "normalized_from_world",
    "to_world",
    "to_normalized",
    "normalized_gaussians",
    "quaternion_multiply",
    "quaternion_from_matrix",
]


def world_from_normalized(transform: RigTransform) -> np.ndarray:
    """The 4x4 similarity ``[R^T / s | c]`` taking normalized points to the rig's world frame. Refused for
    ``per_camera_zoom`` (each camera moved on its own: no single transform undoes it)."""
    if transform.per_camera_zoom:
        raise ValueError(
            "data.normalization.per_camera_zoom: true moves each camera separately, so no similarity maps the "
            "prediction back to the rig's frame; predict with per_camera_zoom: false"
        )
    matrix = np.eye(4)
    matrix[:3, :3] = transform.rotation.T / transform.scale
    matrix[:3, 3] = transform.center
    return matrix


def normalized_from_world(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a :func:`world_from_normalized` matrix (``[s R | -s R c]``): a similarity ``k Q`` inverts
    to ``Q^T / k``, i.e. its transpose divided by ``k^2``."""
    scale = _scale(matrix)
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T / scale**2
    inverse[:3, 3] = -inverse[:3, :3] @ matrix[:3, 3]
    return inverse


def _scale(matrix: np.ndarray) -> float:
    """The similarity's uniform scale (its linear part's determinant is scale^3)."""
    return float(np.cbrt(np.linalg.det(matrix[:3, :3])))


def to_world(
    matrix: np.ndarray, means: np.ndarray, scales: np.ndarray, quats: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means [n, 3], scales [n, 3] and unit quaternions [n, 4] (w, x, y, z) through the similarity ``matrix``
    (a :func:`world_from_normalized` or :func:`normalized_from_world`), in float64."""
    matrix = np.asarray(matrix, np.float64)
    scale = _scale(matrix)
    rotation = matrix[:3, :3] / scale
    means = np.asarray(means, np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    scales = np.asarray(scales, np.float64) * scale
    quats = quaternion_multiply(quaternion_from_matrix(rotation)[None], np.asarray(quats, np.float64))
    return means, scales, quats


def to_normalized(
    matrix: np.ndarray, means: np.ndarray, scales: np.ndarray, quats: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-frame Gaussians back into the normalized frame of ``matrix`` (a :func:`world_from_normalized`)."""
    return to_world(normalized_from_world(matrix), means, scales, quats)


def normalized_gaussians(frame: dict, matrix: np.ndarray):
    """A stored frame (``SequenceStore.read_frame``: world units) as renderable Gaussians in the normalized frame of
    ``matrix`` (its ``world_from_normalized``): what the video and the viewer draw."""
    import torch

    from gslrm.model.gaussians import Gaussians

    means, scales, quats = to_normalized(matrix, frame["means"], frame["scales"], frame["rotations"])
    tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array, np.float32))[None]  # noqa: E731
    return Gaussians.from_colors(
        tensor(means), tensor(scales), tensor(quats), tensor(frame["opacities"]), tensor(frame["colors"])
    )


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions, broadcast over leading dims."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation (Shepperd's method: the largest of the four squared
    components first, so no branch divides by a small number)."""
    r = np.asarray(rotation, np.float64)
    trace = np.trace(r)
    candidates = [trace, r[0, 0], r[1, 1], r[2, 2]]
    largest = int(np.argmax(candidates))
    if largest == 0:
        w = 0.5 * np.sqrt(1.0 + trace)
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    else:
        i = largest - 1
        j, k = (i + 1) % 3, (i + 2) % 3
        v = 0.5 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (r[k, j] - r[j, k]) / (4 * v)
        q[1 + i] = v
        q[1 + j] = (r[j, i] + r[i, j]) / (4 * v)
        q[1 + k] = (r[k, i] + r[i, k]) / (4 * v)
    q = np.asarray(q)
    return q if q[0] >= 0 else -q
