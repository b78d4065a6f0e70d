"""A pure-PyTorch tiled rasterizer with gsplat's compositing rules, for CPUs (gsplat's own is CUDA-only).

Per pixel, Gaussians are blended front to back in depth order exactly as gsplat's ``rasterize_to_pixels`` kernel:
    sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,     skipped if sigma < 0
    alpha = min(max_alpha, opacity * exp(-sigma)), skipped if alpha < 1/255
    stop (exclusive) at the first Gaussian after which the transmittance would be <= 1e-4
with pixel centres at +0.5. gsplat clamps alpha at 0.999; the graphdeco rasterizer FaceLift trained with uses 0.99
(``max_alpha``). The sequential loop becomes a cumulative product over each tile's depth-sorted list; because the
transmittance only decreases, "stop at the first" equals "keep those whose inclusive transmittance is > 1e-4".

Memory: tiles are processed in chunks of at most ``chunk_elements`` (tile, Gaussian, pixel) triples, and the
compositing has its own backward (suffix sums, as gsplat's kernel) that keeps only per-Gaussian inputs: the
(tile, Gaussian, pixel) intermediates of one chunk exist at a time, forward and backward.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.render.projection import Splats

__all__ = ["rasterize_tiles", "blend", "intersections", "ALPHA_MIN", "TRANSMITTANCE_MIN", "GSPLAT_MAX_ALPHA"]

ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
GSPLAT_MAX_ALPHA = 0.999


def _alphas(means2d, conics, opacities, xs, ys, valid, max_alpha):
    """Per (tile, Gaussian, pixel): blended alpha, unclamped alpha, differentiable mask, inclusive transmittance,
    inclusion mask and the per-axis offsets. A tile's pixels form a grid, so sigma is assembled from per-row and
    per-column terms: sigma[y, x] = 0.5 c dy^2 + 0.5 a dx^2 + b dx dy (the conic is positive definite: sigma >= 0)."""
    dx = xs[:, None, :] - means2d[..., 0, None]  # [t, k, T]
    dy = ys[:, None, :] - means2d[..., 1, None]
    a, b, c = conics[..., 0, None], conics[..., 1, None], conics[..., 2, None]
    sigma = (
        (0.5 * c * dy * dy)[..., :, None]
        + (0.5 * a * dx * dx)[..., None, :]
        + dy[..., :, None] * (b * dx)[..., None, :]
    )
    log_opacity = torch.where(valid, torch.log(opacities.clamp_min(1e-30)), torch.full_like(opacities, -torch.inf))
    raw = torch.exp(log_opacity[..., None, None] - sigma).flatten(2)  # [t, k, p], p = y * T + x
    alpha = torch.where(raw >= ALPHA_MIN, raw.clamp_max(max_alpha), torch.zeros_like(raw))
    transmittance = torch.cumprod(1.0 - alpha, dim=1)  # inclusive, over the depth-sorted list
    included = transmittance > TRANSMITTANCE_MIN  # a prefix: transmittance only decreases
    alpha = torch.where(included, alpha, torch.zeros_like(alpha))
    differentiable = (alpha > 0) & (raw < max_alpha)
    return alpha, raw, differentiable, transmittance, included, dx, dy


class _Blend(torch.autograd.Function):
    """Compositing with a hand-written backward (as gsplat's kernel: suffix sums instead of a stored graph).

    Saves only the gathered per-Gaussian inputs, so a chunk's (tile, Gaussian, pixel) intermediates live only
    while it is computed, in the forward and again in the backward pass.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, xs, ys, valid, max_alpha):
        alpha, _, _, transmittance, included, _, _ = _alphas(means2d, conics, opacities, xs, ys, valid, max_alpha)
        before = torch.cat([torch.ones_like(transmittance[:, :1]), transmittance[:, :-1]], dim=1)
        accumulated = torch.einsum("tkp,tkc->tpc", alpha * before, features)
        final = torch.where(included, transmittance, torch.ones_like(transmittance)).amin(dim=1)
        ctx.save_for_backward(means2d, conics, opacities, features, xs, ys, valid, final)
        ctx.max_alpha = max_alpha
        return accumulated, final

    @staticmethod
    def backward(ctx, grad_accumulated, grad_final):
        means2d, conics, opacities, features, xs, ys, valid, final = ctx.saved_tensors
        alpha, raw, differentiable, transmittance, _, dx, dy = _alphas(
            means2d, conics, opacities, xs, ys, valid, ctx.max_alpha
        )
        before = torch.cat([torch.ones_like(transmittance[:, :1]), transmittance[:, :-1]], dim=1)
        weights = alpha * before
        grad_features = torch.einsum("tkp,tpc->tkc", weights, grad_accumulated)
        # d acc/d alpha_k = T_k f_k - (sum_{j>k} w_j f_j) / (1 - alpha_k);  d T_final/d alpha_k = -T_final / (1 - alpha_k)
        projected = torch.einsum("tpc,tkc->tkp", grad_accumulated, features)
        weighted = weights * projected
        after = torch.flip(torch.cumsum(torch.flip(weighted, [1]), dim=1), [1]) - weighted
        grad_alpha = before * projected - (after + (grad_final * final)[:, None, :]) / (1.0 - alpha)
        grad_raw = torch.where(differentiable, grad_alpha * raw, torch.zeros_like(raw))  # raw = opacity exp(-sigma)
        grad_opacities = grad_raw.sum(-1) / opacities.clamp_min(1e-30)
        # sigma's gradient is -grad_raw; reduce it over rows / columns first (the per-axis structure again)
        size = xs.shape[-1]
        grad_sigma = -grad_raw.unflatten(-1, (size, size))  # [t, k, y, x]
        per_x, per_y = grad_sigma.sum(-2), grad_sigma.sum(-1)  # [t, k, T]
        cross = torch.einsum("tkyx,tky,tkx->tk", grad_sigma, dy, dx)
        a, b, c = conics[..., 0], conics[..., 1], conics[..., 2]
        sum_x, sum_y = (per_x * dx).sum(-1), (per_y * dy).sum(-1)
        grad_conics = torch.stack([0.5 * (per_x * dx * dx).sum(-1), cross, 0.5 * (per_y * dy * dy).sum(-1)], dim=-1)
        grad_means2d = torch.stack([-(a * sum_x + b * sum_y), -(b * sum_x + c * sum_y)], dim=-1)
        return grad_means2d, grad_conics, grad_opacities, grad_features, None, None, None, None


def blend(
    means2d: Float[Tensor, "t k 2"],
    conics: Float[Tensor, "t k 3"],
    opacities: Float[Tensor, "t k"],
    features: Float[Tensor, "t k c"],
    xs: Float[Tensor, "t s"],
    ys: Float[Tensor, "t s"],
    valid: Tensor,
    max_alpha: float,
) -> tuple[Float[Tensor, "t p c"], Float[Tensor, "t p"]]:
    """Front-to-back blending of depth-sorted lists (dim k) over each tile's pixel grid (centres ``xs`` x ``ys``,
    p = y * s + x). Returns the accumulated features and the final transmittance."""
    return _Blend.apply(means2d, conics, opacities, features, xs, ys, valid, max_alpha)


def intersections(splats: Splats, tile_size: int, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
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


def _chunk(splats: Splats, gaussian: Tensor, starts: Tensor, counts: Tensor, xs: Tensor, ys: Tensor, max_alpha: float):
    """Blend one chunk of tiles: gather each tile's padded list and composite its pixels."""
    k = int(counts.max())
    slot = torch.arange(k, device=counts.device)
    valid = slot[None] < counts[:, None]
    index = gaussian[(starts[:, None] + slot[None]).clamp_max(len(gaussian) - 1)]
    return blend(
        splats.means2d.reshape(-1, 2)[index],
        splats.conics.reshape(-1, 3)[index],
        splats.opacities.reshape(-1)[index],
        splats.features.reshape(-1, splats.features.shape[-1])[index],
        xs,
        ys,
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
    gaussian, per_tile, _ = intersections(splats, tile_size, tiles_x, tiles_y)
    starts = torch.cumsum(per_tile, 0) - per_tile
    local = torch.arange(tile_size, device=device, dtype=dtype) + 0.5  # pixel centres within a tile

    total_tiles = images * tiles_x * tiles_y
    accumulated = torch.zeros(total_tiles, tile_size * tile_size, channels, device=device, dtype=dtype)
    transmittance = torch.ones(total_tiles, tile_size * tile_size, device=device, dtype=dtype)
    busy = torch.nonzero(per_tile).flatten()
    busy = busy[torch.argsort(per_tile[busy])]  # similar list lengths share a chunk: little padding
    pixels_per_tile = tile_size * tile_size
    # chunks of consecutive (length-sorted) tiles whose padded size stays within chunk_elements: with ascending
    # lengths, k tiles starting at `position` cost k * length[position + k - 1], which grows with k
    sorted_lengths = per_tile[busy]
    limit = max(1, chunk_elements // pixels_per_tile)
    done, results, finals = [], [], []
    position = 0
    while position < len(busy):
        rest = sorted_lengths[position:]
        fits = torch.arange(1, len(rest) + 1, device=device) * rest <= limit
        take = max(1, int(fits.sum()))
        tiles = busy[position : position + take]
        position += take
        within = tiles % (tiles_x * tiles_y)
        xs = (within % tiles_x).to(dtype)[:, None] * tile_size + local
        ys = (within // tiles_x).to(dtype)[:, None] * tile_size + local
        acc, final = _chunk(splats, gaussian, starts[tiles], per_tile[tiles], xs, ys, max_alpha)
        done.append(tiles)
        results.append(acc)
        finals.append(final)
    if done:  # one scatter for all chunks (an out-of-place copy per chunk would copy the whole image each time)
        order = torch.cat(done)
        accumulated = accumulated.index_copy(0, order, torch.cat(results))
        transmittance = transmittance.index_copy(0, order, torch.cat(finals))

    def untile(t: Tensor) -> Tensor:
        t = t.reshape(images, tiles_y, tiles_x, tile_size, tile_size, -1).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(images, tiles_y * tile_size, tiles_x * tile_size, -1)[:, :height, :width]

    transmittance = untile(transmittance[..., None])
    colors = untile(accumulated) + background[:, None, None, :] * transmittance
    return colors, 1.0 - transmittance
