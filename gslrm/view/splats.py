"""What the browser viewer draws, as numpy arrays: Gaussians as viser splats, rig cameras as frustum poses, and the
browser camera as our renderer's camera. No viser import here (the training callback and the tests use it cheaply)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci, _quat_to_rotmat
from torch import Tensor

from gslrm.model.gaussians import Gaussians

__all__ = [
    "Splats",
    "to_splats",
    "matrix_to_quat",
    "camera_to_opencv",
    "nearest_camera",
    "scene_up",
    "overview_position",
]


@dataclass
class Splats:
    """One sample's Gaussians as viser's ``add_gaussian_splats`` takes them (float32)."""

    centers: np.ndarray  # [n, 3]
    covariances: np.ndarray  # [n, 3, 3]
    rgbs: np.ndarray  # [n, 3] in [0, 1]
    opacities: np.ndarray  # [n, 1]
    total: int  # Gaussians in the prediction, before the threshold and the subsampling

    def __len__(self) -> int:
        return self.centers.shape[0]


def matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a 3x3 rotation matrix (Shepperd's method: the largest diagonal term picks the stable branch)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q) * (1.0 if q[0] >= 0 else -1.0)


def to_splats(gaussians: Gaussians, min_opacity: float, max_splats: int) -> Splats:
    """Sample 0's Gaussians of opacity above ``min_opacity``, at most ``max_splats`` of them (the most opaque: a
    browser sorts every splat each frame, and 1M of them is more than most laptops' browsers draw smoothly)."""
    g = gaussians.detach().float().map(lambda t: t[0].cpu())
    total = g.means.shape[0]
    keep = torch.nonzero(g.opacities > min_opacity).flatten()
    if keep.numel() > max_splats:
        keep = keep[torch.topk(g.opacities[keep], max_splats).indices]
    # R S S^T R^T from the unit quaternion (w, x, y, z) and scales: gsplat's code, as the renderer's projection uses
    covariances, _ = _quat_scale_to_covar_preci(g.quats[keep], g.scales[keep], compute_covar=True, compute_preci=False)
    return Splats(
        centers=g.means[keep].numpy().astype(np.float32),
        covariances=covariances.numpy().astype(np.float32),
        rgbs=g.colors[keep].clamp(0, 1).numpy().astype(np.float32),
        opacities=g.opacities[keep][:, None].numpy().astype(np.float32),
        total=total,
    )


def camera_to_opencv(wxyz, position, fov_y: float, width: int, height: int) -> tuple[Tensor, Tensor]:
    """A browser camera (viser: OpenCV axes, +z forward, +y down; vertical field of view) as our renderer's
    ``c2w [4, 4]`` and ``fxfycxcy [4]`` for a ``width`` x ``height`` image (square pixels, centred principal point)."""
    c2w = torch.eye(4)
    c2w[:3, :3] = _quat_to_rotmat(torch.tensor(np.asarray(wxyz), dtype=torch.float32))
    c2w[:3, 3] = torch.tensor(np.asarray(position), dtype=torch.float32)
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    return c2w, torch.tensor([focal, focal, width / 2.0, height / 2.0])


def nearest_camera(c2w: Tensor, cameras_c2w: Tensor) -> int:
    """The rig camera closest to ``c2w``: the smallest distance between the centres plus the angle between the
    viewing directions (radians, scaled by the rig's mean distance to its centre, so both are in scene units)."""
    centres, directions = cameras_c2w[:, :3, 3], cameras_c2w[:, :3, 2]
    scale = centres.norm(dim=-1).mean().clamp_min(1e-6)
    distance = (centres - c2w[:3, 3]).norm(dim=-1)
    angle = torch.acos((directions @ c2w[:3, 2]).clamp(-1, 1))
    return int(torch.argmin(distance + scale * angle))


def scene_up(cameras_c2w: Tensor) -> np.ndarray:
    """The rig's up direction: minus the mean of its cameras' image-down (+y) axes."""
    up = -cameras_c2w[:, :3, 1].mean(dim=0)
    return (up / up.norm().clamp_min(1e-9)).numpy()


def overview_position(camera_c2w: Tensor, target: np.ndarray, up: np.ndarray, factor: float) -> np.ndarray:
    """Where the first view looks at ``target`` from: ``factor`` times farther out than ``camera_c2w`` and raised
    by half that camera's distance along ``up`` (the whole prediction in view with room around it, and that
    camera's own frustum below the centre of the view rather than in front of the animal)."""
    offset = camera_c2w[:3, 3].numpy().astype(np.float64) - target
    return target + factor * offset + 0.5 * np.linalg.norm(offset) * up
