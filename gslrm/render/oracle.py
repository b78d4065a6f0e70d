"""Dense all-pairs reference rasterizer: every Gaussian against every pixel, no tiles, no culling by radius.

For tests and ``python -m gslrm.bench`` only (it is what the tiled rasterizer must equal); never used in training.
Its compositing is written independently of the tiled one, with plain autograd (no hand-written backward), so the
two agree only if the tiling, sorting, culling and the tiled rasterizer's backward are right.
Pixels are processed in chunks so its memory stays finite.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.render.projection import Splats
from gslrm.render.tiles import ALPHA_MIN, GSPLAT_MAX_ALPHA, TRANSMITTANCE_MIN

__all__ = ["rasterize_dense", "blend_autograd"]


def blend_autograd(deltas, conics, opacities, features, valid, max_alpha):
    """Front-to-back blending of depth-sorted lists (dim k) for pixel offsets ``deltas [t,k,p,2]``, with autograd."""
    a, b, c = conics[..., 0, None], conics[..., 1, None], conics[..., 2, None]
    dx, dy = deltas[..., 0], deltas[..., 1]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(opacities[..., None] * torch.exp(-sigma), max_alpha)
    keep = valid[..., None] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(1.0 - alpha, dim=1)
    included = transmittance > TRANSMITTANCE_MIN
    before = torch.cat([torch.ones_like(transmittance[:, :1]), transmittance[:, :-1]], dim=1)
    weights = torch.where(included, alpha * before, torch.zeros_like(alpha))
    accumulated = torch.einsum("tkp,tkc->tpc", weights, features)
    final = torch.prod(torch.where(included, 1.0 - alpha, torch.ones_like(alpha)), dim=1)
    return accumulated, final


def rasterize_dense(
    splats: Splats,
    width: int,
    height: int,
    background: Float[Tensor, "i c"],
    max_alpha: float = GSPLAT_MAX_ALPHA,
    pixel_chunk: int = 1024,
) -> tuple[Float[Tensor, "i h w c"], Float[Tensor, "i h w 1"]]:
    images = splats.features.shape[0]
    device, dtype = splats.features.device, splats.features.dtype
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    colors, alphas = [], []
    for image in range(images):
        order = torch.argsort(splats.depths[image].detach(), stable=True)
        valid = (splats.radii[image, order] > 0).all(dim=-1)
        means2d = splats.means2d[image, order]
        accumulated, transmittance = [], []
        for start in range(0, len(pixels), pixel_chunk):
            chunk = pixels[start : start + pixel_chunk]
            deltas = (chunk[None, :, :] - means2d[:, None, :])[None]
            acc, final = blend_autograd(
                deltas,
                splats.conics[image, order][None],
                splats.opacities[image, order][None],
                splats.features[image, order][None],
                valid[None],
                max_alpha,
            )
            accumulated.append(acc[0])
            transmittance.append(final[0])
        transmittance = torch.cat(transmittance)[:, None]
        colors.append((torch.cat(accumulated) + background[image] * transmittance).reshape(height, width, -1))
        alphas.append((1.0 - transmittance).reshape(height, width, 1))
    return torch.stack(colors), torch.stack(alphas)
