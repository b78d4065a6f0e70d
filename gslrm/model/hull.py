"""Where each input pixel's ray enters the visual hull of the input views' masks (``model.hull_depth``, not
FaceLift's): a depth for every foreground pixel from geometry alone, which the model then corrects.

Why: the default run's pixel Gaussians lie 5-7 % of the depth off the true surface (median), and a part one or two
pixels wide (the tail, the feet) seen from another camera then lands beside itself; the model learns that depth
from four 64 px views through 4x4-pixel tokens and does not get there in the default's budget
(docs/training.md#thin-parts-a-measure-and-the-depth-they-need). The hull is carved from the masks the data carries
anyway: on the 8 validation samples its entry point is 1.0 % of the depth off on the thin parts and 1.8 % on the
body (medians, exact 64 px masks), and it is nearest exactly where the model is worst, on parts that are thin in
every view.

The ray of a foreground pixel of view ``a`` is sampled at ``samples`` distances over ``t0 +- span`` (t0: the ray's
point nearest the world origin, as the model's depth parameterisation); a sample is inside the hull when it lies in
front of every other input camera, inside its frame and inside its mask (alpha > 0.5). The first such sample is the
entry. A pixel without one (its part is out of another view's frame, or the masks disagree) keeps t0 and is flagged,
so the model knows which depths to trust.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["hull_entry", "grow_masks", "jitter_masks", "HULL_CHANNELS"]

HULL_CHANNELS = 2  # the model's extra input per pixel: (entry - t0) / span, and 1 where an entry was found


@torch.no_grad()
def hull_entry(
    alpha: Float[Tensor, "b v h w"],
    c2w: Float[Tensor, "b v 4 4"],
    fxfycxcy: Float[Tensor, "b v 4"],
    ray_o: Float[Tensor, "b v 3 h w"],
    ray_d: Float[Tensor, "b v 3 h w"],
    span: float,
    samples: int,
) -> tuple[Float[Tensor, "b v h w"], Bool[Tensor, "b v h w"]]:
    """Distance along each pixel's unit ray to the visual hull's entry, and whether there is one (foreground
    pixels only; the others get t0 and False)."""
    batch, views, height, width = alpha.shape
    masks = alpha > 0.5
    t0 = -(ray_o * ray_d).sum(dim=2)  # [b v h w]
    distance, found = t0.clone(), torch.zeros_like(masks)
    if views < 2:
        return distance, found
    index = masks.nonzero(as_tuple=True)  # the foreground pixels (b, v, y, x)
    origins = ray_o.permute(0, 1, 3, 4, 2)[index]  # [n 3]
    directions = ray_d.permute(0, 1, 3, 4, 2)[index]
    starts = t0[index]
    offsets = torch.linspace(-span, span, samples, dtype=ray_o.dtype, device=ray_o.device)
    inside = (starts[:, None] + offsets[None]) > 0  # in front of the pixel's own camera
    w2c = torch.linalg.inv(c2w)  # [b v 4 4]
    flat_masks = masks.reshape(-1)  # (b, v, y, x) flattened: one gather for all rays
    rays = torch.arange(len(starts), device=alpha.device)  # the rays still inside the hull somewhere
    for step in range(1, views):  # the other views, in turn: view (a + step) mod v for a pixel of view a
        b_of, other = index[0][rays], (index[1][rays] + step) % views
        rotation, translation = w2c[b_of, other, :3, :3], w2c[b_of, other, :3, 3]
        # the ray in the other camera's frame, p(t0 + s) = start + s * along, one coordinate at a time ([n s] each)
        start = torch.einsum("nij,nj->ni", rotation, origins[rays] + starts[rays, None] * directions[rays])
        start = start + translation
        along = torch.einsum("nij,nj->ni", rotation, directions[rays])
        z = torch.addcmul(start[:, 2:3], offsets[None], along[:, 2:3])
        in_front = z > 1e-6
        inverse_z = z.clamp_min(1e-6).reciprocal_()
        intrinsics = fxfycxcy[b_of, other]  # [n 4]
        x = torch.addcmul(start[:, 0:1], offsets[None], along[:, 0:1]).mul_(inverse_z)
        x = x.mul_(intrinsics[:, 0:1]).add_(intrinsics[:, 2:3]).floor_()
        y = torch.addcmul(start[:, 1:2], offsets[None], along[:, 1:2]).mul_(inverse_z)
        y = y.mul_(intrinsics[:, 1:2]).add_(intrinsics[:, 3:4]).floor_()
        in_frame = in_front & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        pixel = y.clamp_(0, height - 1).mul_(width).add_(x.clamp_(0, width - 1)).long()
        in_mask = flat_masks[pixel.add_(((b_of * views + other) * (height * width))[:, None])]
        inside[rays] &= in_frame & in_mask
        rays = rays[inside[rays].any(dim=1)]
        if len(rays) == 0:
            break
    hit = inside.any(dim=1)
    first = inside.float().argmax(dim=1)
    distance[index] = torch.where(hit, starts + offsets[first], starts)
    found[index] = hit
    return distance, found


def grow_masks(alpha: Float[Tensor, "n h w"], pixels: int) -> Float[Tensor, "n h w"]:
    """Each mask grown (``pixels`` > 0: 3x3 maximum, that many times) or shrunk (< 0: 3x3 minimum): a mask that many
    pixels off all round its outline; a part narrower than twice ``-pixels`` + 1 vanishes."""
    dilate = lambda m: torch.nn.functional.max_pool2d(m, 3, stride=1, padding=1)  # noqa: E731
    masks = alpha[:, None]
    for _ in range(abs(pixels)):
        masks = dilate(masks) if pixels > 0 else -dilate(-masks)  # erosion: the background dilated
    return masks[:, 0]


def jitter_masks(alpha: Float[Tensor, "b v h w"], chance: float) -> Float[Tensor, "b v h w"]:
    """Each view's alpha grown or shrunk by one pixel (``grow_masks``) with probability ``chance``, half each: a
    rig's masks are a pixel off here and there, and a model that has only seen exact ones copies their errors."""
    flat = alpha.flatten(0, 1)
    draw = torch.rand(flat.shape[0], 1, 1, device=alpha.device)
    jittered = torch.where(
        draw < chance / 2, grow_masks(flat, 1), torch.where(draw < chance, grow_masks(flat, -1), flat)
    )
    return jittered.reshape(alpha.shape)
