"""The input views' own depth: each input pixel's Gaussian's z-depth against the data's z-depth of that pixel
(``data.load_depth=true``: the rodent generator renders it), relative L1 over the input view's animal pixels.

Why, beside ``loss.metric_depth`` (the rendered depth of the supervised views): a thin part of the animal (the tail,
a foot) is drawn by few Gaussians, mostly those of the one input view that shows it, and the rendered depth of a
view weighs them by the few pixels they cover, or not at all where they are transparent. This term gives every input
pixel's Gaussian its place on its ray whatever its opacity, so the tail's Gaussians are where the tail is, and the
image and coverage terms decide their opacity and size. Not FaceLift's term; off (weight 0) by default. Synthetic
data only (a rig's recording has no depth): a pre-training term.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig
from gslrm.losses.metrics import depth_abs_rel, thin_parts

__all__ = ["PixelDepthConfig", "PixelDepthLoss", "pixel_z_depth"]


@dataclass
class PixelDepthConfig(TermConfig):
    """``loss.pixel_depth``: off (weight 0) by default; it needs ``data.load_depth=true``."""

    # each pixel of the input masks' thin parts (gslrm.losses.metrics.thin_parts: the tail, the feet; 9 % of the
    # animal's pixels at 64 px) weighs this many body pixels: 1 is the plain mean over the animal
    thin_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.thin_weight < 0:
            raise ValueError(f"loss.pixel_depth.thin_weight: {self.thin_weight} must be >= 0")


def pixel_z_depth(pixel_means: Tensor, ray_o: Tensor, c2w: Tensor) -> Tensor:
    """[b, v, 3, h, w] means (and their rays' origins) and [b, v, 4, 4] OpenCV camera->world -> [b, v, 1, h, w]
    z-depth in each camera: the distance along its viewing axis (+z), as the data's depth and the renderer's are."""
    viewing_axis = c2w[:, :, :3, 2, None, None]  # the camera's +z in world coordinates: [b, v, 3, 1, 1]
    return ((pixel_means - ray_o) * viewing_axis.to(pixel_means)).sum(dim=2, keepdim=True)


class PixelDepthLoss(Term):
    name = "pixel_depth"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.batch is None or "depth" not in inputs.batch:
            raise KeyError("loss.pixel_depth: the batch has no depth: set data.load_depth=true")
        views = inputs.pixel_means.shape[1]
        depth = pixel_z_depth(inputs.pixel_means, inputs.ray_o, inputs.batch["c2w"][:, :views])
        truth = inputs.batch["depth"][:, :views].to(depth)
        # validation's depth error over the input masks, the thin parts' pixels weighted
        thin = thin_parts(inputs.input_mask.flatten(0, 1)).view_as(inputs.input_mask).to(depth)
        return depth_abs_rel(depth, truth, inputs.input_mask, weight=1 + (self.config.thin_weight - 1) * thin)
