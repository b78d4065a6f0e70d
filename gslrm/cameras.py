"""The one camera convention of gslrm, and everything computed from it.

Convention (the same as FaceLift's and OpenCV's):
- camera axes: x right, y down, z forward (the camera looks along +z);
- on disk cameras are world->camera matrices (``w2c``); in memory they are camera->world (``c2w``), 4x4;
- intrinsics are ``fxfycxcy`` in pixels; pixel (i, j) covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5);
- the world is Z-up; a normalized rig sits around the origin at a mean camera distance of 2.7.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "FACELIFT_RADIUS",
    "FACELIFT_HFOV_DEG",
    "pixel_rays",
    "posed_input",
    "look_at_c2w",
    "turntable_cameras",
    "intrinsics_matrix",
    "project_points",
]

FACELIFT_RADIUS = 2.7
FACELIFT_HFOV_DEG = 50.0


def pixel_rays(
    c2w: Float[Tensor, "*batch 4 4"], fxfycxcy: Float[Tensor, "*batch 4"], height: int, width: int
) -> tuple[Float[Tensor, "*batch 3 h w"], Float[Tensor, "*batch 3 h w"]]:
    """Ray origin and unit direction through every pixel centre, channels first like the images.

    The direction is normalized in camera space and again after rotation to the world, as FaceLift does, so
    that the 9-channel input matches the released checkpoint bit for bit up to float rounding.
    """
    device, dtype = c2w.device, c2w.dtype
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    fx, fy, cx, cy = (fxfycxcy[..., k, None, None] for k in range(4))
    d_cam = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like(xs).expand_as(fx * xs)], dim=-1)
    d_cam = torch.nn.functional.normalize(d_cam, dim=-1)  # [*batch, h, w, 3]
    rotation = c2w[..., :3, :3]
    d_world = torch.einsum("...ij,...hwj->...hwi", rotation, d_cam)
    d_world = torch.nn.functional.normalize(d_world, dim=-1)
    ray_d = d_world.movedim(-1, -3)  # [*batch, 3, h, w]
    ray_o = c2w[..., :3, 3, None, None].expand_as(ray_d)
    return ray_o, ray_d


def posed_input(
    rgb: Float[Tensor, "*batch 3 h w"], ray_o: Float[Tensor, "*batch 3 h w"], ray_d: Float[Tensor, "*batch 3 h w"]
) -> Float[Tensor, "*batch 9 h w"]:
    """FaceLift's 9-channel "custom Plücker" input: ``[rgb*2-1, d, o - (o.d) d]``.

    The third block is the point on each ray closest to the world origin, which is why the rig must be
    normalized around the origin: it is the only positional signal the transformer gets.
    """
    o_dot_d = (ray_o * ray_d).sum(dim=-3, keepdim=True)
    nearest_point = ray_o - o_dot_d * ray_d
    return torch.cat([rgb * 2.0 - 1.0, ray_d, nearest_point], dim=-3)


def look_at_c2w(
    position: Float[Tensor, "*batch 3"], target: Float[Tensor, "*batch 3"], up: Float[Tensor, "3"] | None = None
) -> Float[Tensor, "*batch 4 4"]:
    """OpenCV camera->world matrix of a camera at ``position`` looking at ``target`` with world ``up`` (+Z).

    Columns as FaceLift's turntable: right = forward x up, up' = right x forward, R = [right, -up', forward].
    """
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype, device=position.device)
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward), dim=-1), dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(*position.shape[:-1], 4, 4, dtype=position.dtype, device=position.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = -true_up
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = position
    c2w[..., 3, 3] = 1.0
    return c2w


def turntable_cameras(
    num_views: int,
    resolution: int,
    radius: float = FACELIFT_RADIUS,
    elevation_deg: float = 0.0,
    hfov_deg: float = FACELIFT_HFOV_DEG,
    dtype: torch.dtype = torch.float32,
) -> tuple[Float[Tensor, "n 4 4"], Float[Tensor, "n 4"]]:
    """FaceLift's orbit: azimuths from 270 deg (the camera at (0, -r, 0), the "front") over 360 deg, looking at the origin."""
    azimuths = torch.deg2rad(270.0 + torch.arange(num_views, dtype=torch.float64) * (360.0 / num_views))
    elevation = math.radians(elevation_deg)
    position = torch.stack(
        [
            radius * math.cos(elevation) * torch.cos(azimuths),
            radius * math.cos(elevation) * torch.sin(azimuths),
            torch.full_like(azimuths, radius * math.sin(elevation)),
        ],
        dim=-1,
    )
    c2w = look_at_c2w(position, torch.zeros_like(position)).to(dtype)
    focal = resolution / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
    fxfycxcy = torch.tensor([focal, focal, resolution / 2.0, resolution / 2.0], dtype=dtype).expand(num_views, 4)
    return c2w, fxfycxcy.clone()


def intrinsics_matrix(fxfycxcy: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """3x3 pixel intrinsics K from ``fxfycxcy``."""
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, dim=-2)


def project_points(
    points: Float[Tensor, "*batch n 3"], c2w: Float[Tensor, "*batch 4 4"], fxfycxcy: Float[Tensor, "*batch 4"]
) -> tuple[Float[Tensor, "*batch n 2"], Float[Tensor, "*batch n"]]:
    """World points to continuous pixel coordinates (pixel centres at +0.5) and their z-depth."""
    w2c = torch.linalg.inv(c2w)
    cam = torch.einsum("...ij,...nj->...ni", w2c[..., :3, :3], points) + w2c[..., None, :3, 3]
    z = cam[..., 2]
    fx, fy, cx, cy = (fxfycxcy[..., None, k] for k in range(4))
    uv = torch.stack([fx * cam[..., 0] / z + cx, fy * cam[..., 1] / z + cy], dim=-1)
    return uv, z
