"""FaceLift's points-distance regularizer on the pixel-aligned Gaussians of the input views (its stage-1 warm-up
term)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig

__all__ = ["PointsDistConfig", "PointsDistLoss"]


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
