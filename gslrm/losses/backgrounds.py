"""Supervision on random backgrounds: the rendered views and their targets composited on a random colour per sample,
while the model still sees its input photos on the data's background.

Why: FaceLift renders and supervises on the same white the inputs show, so a background of opaque white Gaussians costs
nothing, and it is what the model learns (eval's ``opacity_iou`` of the default run: 0.11); a white animal is then
indistinguishable from its background. When the target's background is a colour the inputs never showed, only empty
space (alpha 0) reproduces it, so opacity has to follow the animal. The targets are recomposited exactly from the
image's alpha: ``rgb' = rgb + (new - old) (1 - alpha)`` holds for ``rgb = fg alpha + old (1 - alpha)``, which the
loader's compositing and its linear resampling keep.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["recomposite", "with_random_backgrounds", "LossBackground"]


class LossBackground(StrEnum):
    """``loss.background``: what the rendered views and their targets are composited on in training."""

    data = "data"  # the inputs' own (FaceLift)
    random = "random"  # a random colour per sample: opacity must follow the animal


def recomposite(
    image: Float[Tensor, "b v 4 h w"], old: Float[Tensor, "b 3"], new: Float[Tensor, "b 3"]
) -> Float[Tensor, "b v 4 h w"]:
    """RGB moved from background ``old`` to ``new`` through the alpha channel (alpha unchanged)."""
    rgb, alpha = image[:, :, :3], image[:, :, 3:4]
    shift = (new - old).to(image)[:, None, :, None, None]
    return torch.cat([rgb + shift * (1.0 - alpha), alpha], dim=2)


def with_random_backgrounds(batch: dict) -> dict:
    """A shallow copy of ``batch`` whose ``image`` and ``bg_color`` are on uniform random colours, one per sample
    (torch's generator: seeded runs repeat). The caller keeps the original for the model's inputs."""
    image, old = batch["image"], batch["bg_color"]
    new = torch.rand(old.shape, device=old.device, dtype=old.dtype)
    return {**batch, "image": recomposite(image, old, new), "bg_color": new}
