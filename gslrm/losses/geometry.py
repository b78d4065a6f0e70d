"""FaceLift's geometric regularizers on the pixel-aligned Gaussians of the input views (reference section 4.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig

__all__ = ["PixelAlignConfig", "PixelAlignLoss", "PointsDistConfig", "PointsDistLoss"]


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


@dataclass
class PointsDistConfig(TermConfig):
    target_std: float = 0.5


class PointsDistLoss(Term):
    """Pulls each input view's distance distribution to mean |o| and std 0.5:
    target = (d.detach() - mu) / (sigma + 1e-8) * 0.5 + |o|, loss = mean((d - target)^2), d = |xyz - o|."""

    name = "pointsdist"

    def forward(self, inputs: LossInputs) -> Tensor:
        distance = (inputs.pixel_means - inputs.ray_o).norm(dim=2)  # [b, v, h, w]
        detached = distance.detach()
        mean = detached.mean(dim=(2, 3), keepdim=True)
        std = detached.std(dim=(2, 3), keepdim=True)
        camera_distance = inputs.ray_o.norm(dim=2)
        target = (detached - mean) / (std + 1e-8) * self.config.target_std + camera_distance
        return torch.mean((distance - target) ** 2)
