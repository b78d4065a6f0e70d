"""Projection of 3D Gaussians to 2D splats with gsplat's own PyTorch reference code (``gsplat.cuda._torch_impl``).

Used by the CPU rasterizer and the dense test oracle so both see exactly the splats gsplat's CUDA path computes:
EWA projection with the frustum clamp, ``eps2d`` added to the 2D covariance, near/far culling. The radii are then
tightened as gsplat's CUDA projection does (the torch reference keeps 3.33 sigma): opacity-aware extent
``min(3.33, sqrt(2 ln(opacity * 255)))`` sigma, Gaussians with opacity < 1/255 or off-image culled. This is exact:
outside that box every alpha is below 1/255 and is skipped by the compositor anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from jaxtyping import Float, Int
from torch import Tensor

from gslrm.cameras import intrinsics_matrix
from gslrm.model.gaussians import Gaussians

__all__ = ["Splats", "project", "NEAR_PLANE", "FAR_PLANE", "EPS2D"]

NEAR_PLANE, FAR_PLANE = 0.01, 100.0  # FaceLift's znear / zfar
EPS2D = 0.3


@dataclass
class Splats:
    """Per image (I = batch x views) 2D splats; ``features`` carries RGB then z-depth (for expected depth)."""

    means2d: Float[Tensor, "i n 2"]
    conics: Float[Tensor, "i n 3"]
    features: Float[Tensor, "i n c"]
    opacities: Float[Tensor, "i n"]
    depths: Float[Tensor, "i n"]
    radii: Int[Tensor, "i n 2"]


def _tight_radii(radii: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, width: int, height: int) -> Tensor:
    """gsplat's opacity-aware bounding box (its CUDA ``ProjectionEWA3DGSFused``), from the conics' 2D covariance."""
    with torch.no_grad():
        a, b, c = conics.unbind(-1)
        inverse_det = 1.0 / (a * c - b * b).clamp_min(1e-20)
        sigma = torch.stack([c * inverse_det, a * inverse_det], dim=-1).clamp_min(0).sqrt()
        extent = torch.sqrt(2.0 * torch.log((opacities * 255.0).clamp_min(1.0))).clamp_max(3.33)
        tight = torch.ceil(extent[..., None] * sigma)
        inside = (
            (means2d[..., 0] + tight[..., 0] > 0)
            & (means2d[..., 0] - tight[..., 0] < width)
            & (means2d[..., 1] + tight[..., 1] > 0)
            & (means2d[..., 1] - tight[..., 1] < height)
        )
        keep = (radii > 0).all(dim=-1) & (opacities >= 1.0 / 255.0) & inside & (tight > 0).any(dim=-1)
        return torch.where(keep[..., None], tight, torch.zeros_like(tight)).int()


def project(
    gaussians: Gaussians,
    c2w: Float[Tensor, "b v 4 4"],
    fxfycxcy: Float[Tensor, "b v 4"],
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> Splats:
    batch, views = c2w.shape[:2]
    covars, _ = _quat_scale_to_covar_preci(gaussians.quats, gaussians.scales, compute_covar=True, compute_preci=False)
    viewmats = torch.linalg.inv(c2w)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        gaussians.means, covars, viewmats, intrinsics_matrix(fxfycxcy), width, height, eps2d, near_plane, far_plane
    )  # [b, v, n, ...]
    radii = _tight_radii(radii, means2d, conics, gaussians.opacities[:, None].expand_as(depths), width, height)
    # colours exactly as gsplat.rasterization: SH evaluated towards the camera, + 0.5, clamped at 0
    directions = gaussians.means[:, None] - c2w[:, :, None, :3, 3]
    coefficients = gaussians.features[:, None].expand(-1, views, -1, -1, -1)
    rgb = _spherical_harmonics(gaussians.sh_degree, directions, coefficients)
    rgb = torch.clamp_min(rgb + 0.5, 0.0)
    features = torch.cat([rgb, depths[..., None]], dim=-1)
    flat = lambda t: t.reshape(batch * views, *t.shape[2:])  # noqa: E731
    return Splats(
        means2d=flat(means2d),
        conics=flat(conics),
        features=flat(features),
        opacities=flat(gaussians.opacities[:, None].expand(-1, views, -1)),
        depths=flat(depths),
        radii=flat(radii),
    )
