"""Dense all-pairs reference rasterizer: every Gaussian against every pixel, no tiles, no culling by radius.

For tests and ``python -m gslrm.bench`` only (it is what the tiled rasterizer must equal); never used in training.
Pixels are processed in chunks so its memory stays finite.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.render.projection import Splats
from gslrm.render.tiles import GSPLAT_MAX_ALPHA, blend

__all__ = ["rasterize_dense"]


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
            acc, final = blend(
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
