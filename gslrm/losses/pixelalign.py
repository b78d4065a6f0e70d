"""FaceLift's pixel-alignment regularizer on the pixel-aligned Gaussians of the input views."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig

__all__ = ["PixelAlignConfig", "PixelAlignLoss"]


@dataclass
class PixelAlignConfig(TermConfig):
    masked: bool = True  # FaceLift's masked_pixelalign_loss


class PixelAlignLoss(Term):
    """mean |v - ((v.detach() . d) d)| with v = xyz - o: the distance of each mean from its ray (~0 when hard
    pixel alignment is on), optionally weighted by the input alpha."""

    name = "pixelalign"

    def forward(self, inputs: LossInputs) -> Tensor:
        offset = inputs.pixel_means - inputs.ray_o
        along = (offset.detach() * inputs.ray_d).sum(dim=2, keepdim=True)
        orthogonal = offset - along * inputs.ray_d
        if self.config.masked:
            orthogonal = orthogonal * inputs.input_mask
        return orthogonal.norm(dim=2).mean()
