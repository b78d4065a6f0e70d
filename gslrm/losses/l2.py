"""L2 (FaceLift's main term) and its masked variant (over the animal's pixels only: ``loss=masked``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig, foreground

__all__ = ["L2Config", "L2Loss", "masked_mse"]


@dataclass
class L2Config(TermConfig):
    weight: float = 1.0
    masked: bool = False  # mean over foreground pixels only (target alpha > 0.5)


def masked_mse(render: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """sum m (r - t)^2 / (sum m * 3), m = (alpha > 0.5), the count clamped at 1 (an empty mask gives 0)."""
    m = foreground(mask)
    return (m * (render - target) ** 2).sum() / (m.sum() * render.shape[-3]).clamp_min(1.0)


class L2Loss(Term):
    name = "l2"

    def forward(self, inputs: LossInputs) -> Tensor:
        if self.config.masked:
            return masked_mse(inputs.render, inputs.target, inputs.mask)
        return F.mse_loss(inputs.render, inputs.target)
