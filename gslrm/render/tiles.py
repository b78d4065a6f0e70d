"""A pure-PyTorch tiled rasterizer with gsplat's compositing rules, for CPUs (gsplat's own is CUDA-only).

Per pixel, Gaussians are blended front to back in depth order exactly as gsplat's ``rasterize_to_pixels`` kernel:
    sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,     skipped if sigma < 0
    alpha = min(max_alpha, opacity * exp(-sigma)), skipped if alpha < 1/255
    stop (exclusive) at the first Gaussian after which the transmittance would be <= 1e-4
with pixel centres at +0.5. gsplat clamps alpha at 0.999; the graphdeco rasterizer FaceLift trained with uses 0.99
(``max_alpha``). The sequential loop becomes a cumulative product over each tile's depth-sorted list; because the
transmittance only decreases, "stop at the first" equals "keep those whose inclusive transmittance is > 1e-4".

Memory: tiles are processed in chunks of at most ``chunk_elements`` (tile, Gaussian, pixel) triples, each chunk under
activation checkpointing when gradients are needed, so the backward pass holds one chunk's intermediates at a time.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from gslrm.render.projection import Splats

__all__ = ["rasterize_tiles", "blend", "ALPHA_MIN", "TRANSMITTANCE_MIN", "GSPLAT_MAX_ALPHA"]

ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
GSPLAT_MAX_ALPHA = 0.999


def blend(
    deltas: Float[Tensor, "t k p 2"],
    conics: Float[Tensor, "t k 3"],
    opacities: Float[Tensor, "t k"],
    features: Float[Tensor, "t k c"],
    valid: Tensor,
    max_alpha: float,
) -> tuple[Float[Tensor, "t p c"], Float[Tensor, "t p"]]:
    """Front-to-back blending of depth-sorted lists (dim k). Returns accumulated features and final transmittance."""
    a, b, c = conics[..., 0, None], conics[..., 1, None], conics[..., 2, None]
    dx, dy = deltas[..., 0], deltas[..., 1]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(opacities[..., None] * torch.exp(-sigma), max_alpha)
    keep = valid[..., None] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(1.0 - alpha, dim=1)  # inclusive
    included = transmittance > TRANSMITTANCE_MIN
    before = torch.cat([torch.ones_like(transmittance[:, :1]), transmittance[:, :-1]], dim=1)
    weights = torch.where(included, alpha * before, torch.zeros_like(alpha))
    accumulated = torch.einsum("tkp,tkc->tpc", weights, features)
    final = torch.prod(torch.where(included, 1.0 - alpha, torch.ones_like(alpha)), dim=1)
    return accumulated, final


def _intersections(splats: Splats, tile_size: int, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
    """(tile id, flat Gaussian id) pairs sorted by tile then depth, and the per-tile counts (gsplat's isect_tiles)."""
    images, n = splats.depths.shape
    means2d, radii = splats.means2d.detach(), splats.radii
    valid = (radii > 0).all(dim=-1)
    low = torch.floor((means2d - radii) / tile_size).long()
    high = torch.ceil((means2d + radii) / tile_size).long()
    low[..., 0].clamp_(0, tiles_x), high[..., 0].clamp_(0, tiles_x)
    low[..., 1].clamp_(0, tiles_y), high[..., 1].clamp_(0, tiles_y)
    span = (high - low).clamp_min(0)
    counts = torch.where(valid, span[..., 0] * span[..., 1], torch.zeros_like(span[..., 0])).flatten()
    gaussian = torch.repeat_interleave(torch.arange(images * n, device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(gaussian), device=counts.device) - torch.repeat_interleave(first, counts)
    width = span[..., 0].flatten()[gaussian].clamp_min(1)
    tx = low[..., 0].flatten()[gaussian] + local % width
    ty = low[..., 1].flatten()[gaussian] + local // width
    tile = (gaussian // n) * (tiles_x * tiles_y) + ty * tiles_x + tx
    order = torch.argsort(splats.depths.detach().flatten()[gaussian], stable=True)
    tile, gaussian = tile[order], gaussian[order]
    order = torch.argsort(tile, stable=True)
    tile, gaussian = tile[order], gaussian[order]
    per_tile = torch.bincount(tile, minlength=images * tiles_x * tiles_y)
    return gaussian, per_tile, valid


def _chunk(splats: Splats, gaussian: Tensor, starts: Tensor, counts: Tensor, pixels: Tensor, max_alpha: float):
    """Blend one chunk of tiles: gather each tile's padded list and composite its pixels."""
    k = int(counts.max())
    slot = torch.arange(k, device=counts.device)
    valid = slot[None] < counts[:, None]
    index = gaussian[(starts[:, None] + slot[None]).clamp_max(len(gaussian) - 1)]
    means2d = splats.means2d.reshape(-1, 2)[index]
    deltas = pixels[:, None, :, :] - means2d[:, :, None, :]
    return blend(
        deltas,
        splats.conics.reshape(-1, 3)[index],
        splats.opacities.reshape(-1)[index],
        splats.features.reshape(-1, splats.features.shape[-1])[index],
        valid,
        max_alpha,
    )


def rasterize_tiles(
    splats: Splats,
    width: int,
    height: int,
    background: Float[Tensor, "i c"],
    tile_size: int = 8,
    max_alpha: float = GSPLAT_MAX_ALPHA,
    chunk_elements: int = 1 << 22,
) -> tuple[Float[Tensor, "i h w c"], Float[Tensor, "i h w 1"]]:
    """Composite splats into images: ``features`` blended over ``background`` and the accumulated alpha."""
    images, n, channels = splats.features.shape
    device, dtype = splats.features.device, splats.features.dtype
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    gaussian, per_tile, _ = _intersections(splats, tile_size, tiles_x, tiles_y)
    starts = torch.cumsum(per_tile, 0) - per_tile
    pixel = torch.arange(tile_size, device=device, dtype=dtype) + 0.5
    local = torch.stack(torch.meshgrid(pixel, pixel, indexing="xy"), dim=-1).reshape(-1, 2)  # (x, y), row-major

    total_tiles = images * tiles_x * tiles_y
    needs_grad = any(t.requires_grad for t in (splats.means2d, splats.conics, splats.features, splats.opacities))
    accumulated = torch.zeros(total_tiles, tile_size * tile_size, channels, device=device, dtype=dtype)
    transmittance = torch.ones(total_tiles, tile_size * tile_size, device=device, dtype=dtype)
    busy = torch.nonzero(per_tile).flatten()
    busy = busy[torch.argsort(per_tile[busy])]  # similar list lengths share a chunk: little padding
    pixels_per_tile = tile_size * tile_size
    position = 0
    while position < len(busy):
        longest = int(per_tile[busy[min(len(busy) - 1, position)]])
        take = max(1, chunk_elements // max(1, longest * pixels_per_tile))
        tiles = busy[position : position + take]
        take = len(tiles)
        longest = int(per_tile[tiles].max())
        while take > 1 and take * longest * pixels_per_tile > chunk_elements:  # the chunk's longest list grew
            take //= 2
            tiles = busy[position : position + take]
            longest = int(per_tile[tiles].max())
        position += take
        within = tiles % (tiles_x * tiles_y)
        origin = torch.stack([within % tiles_x, within // tiles_x], dim=-1).to(dtype) * tile_size
        pixels = origin[:, None, :] + local[None]
        args = (splats, gaussian, starts[tiles], per_tile[tiles], pixels, max_alpha)
        if torch.is_grad_enabled() and needs_grad:
            acc, final = checkpoint(_chunk, *args, use_reentrant=False)
        else:
            acc, final = _chunk(*args)
        accumulated = accumulated.index_copy(0, tiles, acc)
        transmittance = transmittance.index_copy(0, tiles, final)

    def untile(t: Tensor) -> Tensor:
        t = t.reshape(images, tiles_y, tiles_x, tile_size, tile_size, -1).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(images, tiles_y * tile_size, tiles_x * tile_size, -1)[:, :height, :width]

    transmittance = untile(transmittance[..., None])
    colors = untile(accumulated) + background[:, None, None, :] * transmittance
    return colors, 1.0 - transmittance
