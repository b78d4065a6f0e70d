"""``gsplat.rasterization`` on CPU: its CUDA entry points replaced by CPU references, its Python frontend kept.

The frontend is the part of gsplat our CUDA path really talks to: it checks the shapes we pass (batched scenes x
views, SH coefficients [b, n, K, 3], 3x3 Ks, per-(scene, view) backgrounds), evaluates SH towards each camera, appends
depth for ``RGB+ED``, pads the background and divides the depth by alpha. Running it here exercises
``gslrm.render._render_gsplat`` on a machine without a GPU; only the kernels are stand-ins:

- projection, SH, tile intersection (with its depth sort) and the offsets: gsplat's own PyTorch references
  (``gsplat.cuda._torch_impl``; their radii are the plain 3.33-sigma box, not the CUDA kernel's opacity-aware one,
  which changes nothing drawn: outside the tight box every alpha is below 1/255);
- compositing: every tile's depth-sorted list from those references blended with ``oracle.blend_autograd``
  (autograd, no hand-written backward).
"""

from __future__ import annotations

import contextlib
import math

import torch
from gsplat.cuda import _torch_impl as reference

from gslrm.render.oracle import blend_autograd
from gslrm.render.tiles import GSPLAT_MAX_ALPHA


def fully_fused_projection(
    means,
    covars,
    quats,
    scales,
    viewmats,
    Ks,
    width,
    height,
    eps2d=0.3,
    packed=False,
    near_plane=0.01,
    far_plane=1e10,
    radius_clip=0.0,
    sparse_grad=False,
    calc_compensations=False,
    camera_model="pinhole",
    opacities=None,
):
    assert not packed and covars is None and radius_clip == 0.0 and camera_model == "pinhole"
    covars, _ = reference._quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    return reference._fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d, near_plane, far_plane, calc_compensations
    )


def spherical_harmonics(degrees_to_use, dirs, coeffs, masks=None):
    colors = reference._spherical_harmonics(degrees_to_use, dirs, coeffs)
    return colors if masks is None else torch.where(masks[..., None], colors, torch.zeros_like(colors))


def isect_tiles(
    means2d,
    radii,
    depths,
    tile_size,
    tile_width,
    tile_height,
    sort=True,
    segmented=False,
    packed=False,
    n_images=None,
    image_ids=None,
    gaussian_ids=None,
):
    assert not packed
    return reference._isect_tiles(means2d.detach(), radii, depths.detach(), tile_size, tile_width, tile_height, sort)


def isect_offset_encode(isect_ids, n_images, tile_width, tile_height):
    return reference._isect_offset_encode(isect_ids, n_images, tile_width, tile_height)


def rasterize_to_pixels(
    means2d,
    conics,
    colors,
    opacities,
    image_width,
    image_height,
    tile_size,
    isect_offsets,
    flatten_ids,
    backgrounds=None,
    masks=None,
    packed=False,
    absgrad=False,
):
    assert masks is None and not packed
    image_dims, count, channels = means2d.shape[:-2], means2d.shape[-2], colors.shape[-1]
    images = math.prod(image_dims)
    means2d, conics = means2d.reshape(images * count, 2), conics.reshape(images * count, 3)
    colors, opacities = colors.reshape(images * count, channels), opacities.reshape(images * count)
    tiles_y, tiles_x = isect_offsets.shape[-2:]
    starts = isect_offsets.flatten().tolist()
    ends = starts[1:] + [len(flatten_ids)]
    ys, xs = torch.meshgrid(torch.arange(tile_size), torch.arange(tile_size), indexing="ij")
    offsets = torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(means2d) + 0.5
    tiles = []
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        image, tile = divmod(index, tiles_y * tiles_x)
        row, column = divmod(tile, tiles_x)
        ids = flatten_ids[start:end].long()  # this tile's Gaussians, nearest first
        pixels = offsets + torch.tensor([column, row]).to(offsets) * tile_size
        deltas = (pixels[None] - means2d[ids][:, None])[None]  # [1, k, p, 2]
        accumulated, final = blend_autograd(
            deltas,
            conics[ids][None],
            opacities[ids][None],
            colors[ids][None],
            torch.ones(1, len(ids), dtype=torch.bool),
            GSPLAT_MAX_ALPHA,
        )
        background = 0.0 if backgrounds is None else backgrounds.reshape(images, channels)[image] * final[0, :, None]
        tiles.append(torch.cat([accumulated[0] + background, 1.0 - final[0, :, None]], dim=-1))
    out = torch.stack(tiles).reshape(images, tiles_y, tiles_x, tile_size, tile_size, channels + 1)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(images, tiles_y * tile_size, tiles_x * tile_size, channels + 1)
    out = out[:, :image_height, :image_width].reshape(*image_dims, image_height, image_width, channels + 1)
    return out[..., :channels], out[..., channels:]


STAND_INS = (
    "fully_fused_projection",
    "spherical_harmonics",
    "isect_tiles",
    "isect_offset_encode",
    "rasterize_to_pixels",
)


@contextlib.contextmanager
def gsplat_on_cpu(monkeypatch):
    """``gsplat.rasterization`` runs on CPU tensors inside this block (``monkeypatch``: pytest's fixture)."""
    import gsplat.rendering

    import gslrm.render.gsplat_kernels

    for name in STAND_INS:
        monkeypatch.setattr(gsplat.rendering, name, globals()[name])
    monkeypatch.setattr(gslrm.render.gsplat_kernels, "ensure_kernels", lambda: None)  # nothing to build: no kernels
    yield
