"""The depth term: rendered depth against a depth prior by correlation, scale- and shift-free, because a monocular
prior knows neither.

Depth priors follow MiDaS's convention: relative inverse depth ("disparity", larger = closer, 0 = far/unknown).
Per view, d = rendered expected depth, d_m = the prior, both flattened: min(1 - rho(-d_m, d), 1 - rho(1 / (d_m + 200),
d)). rho is Pearson's correlation; with a mask it is computed over the masked pixels only (weighted moments).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.depth.estimators import DepthEstimator
from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images

__all__ = ["pearson", "pearson_depth_loss", "DepthConfig", "DepthLoss"]

EPS = 1e-8
DISPARITY_SHIFT = 200.0  # 1 / (d_m + 200): the prior's second reading, as depth rather than disparity


def pearson(x: Float[Tensor, "n p"], y: Float[Tensor, "n p"], weights: Tensor | None = None) -> Float[Tensor, " n"]:
    """Pearson correlation of each row of x with the same row of y (optionally over the pixels with weight 1)."""
    if weights is None:
        weights = torch.ones_like(x)
    count = weights.sum(-1, keepdim=True).clamp_min(EPS)
    xc = x - (x * weights).sum(-1, keepdim=True) / count
    yc = y - (y * weights).sum(-1, keepdim=True) / count
    covariance = (weights * xc * yc).sum(-1)
    return covariance / ((weights * xc * xc).sum(-1) * (weights * yc * yc).sum(-1)).clamp_min(EPS**2).sqrt()


def pearson_depth_loss(
    rendered: Float[Tensor, "n 1 h w"], prior: Float[Tensor, "n 1 h w"], mask: Tensor | None = None
) -> Tensor:
    """Mean over views of min(1 - rho(-d_m, d), 1 - rho(1 / (d_m + 200), d))."""
    d, d_m = rendered.flatten(1), prior.flatten(1).to(rendered)
    weights = None if mask is None else (mask.flatten(1) > 0.5).to(rendered)
    direct = 1.0 - pearson(-d_m, d, weights)
    shifted = 1.0 - pearson(1.0 / (d_m + DISPARITY_SHIFT), d, weights)
    return torch.minimum(direct, shifted).mean()


@dataclass
class DepthConfig(TermConfig):
    """The depth term's options. Priors are compared on the foreground only by default: empty pixels render
    depth 0 (near) while a prior calls the backdrop far, which would read as anti-correlation."""

    estimator: DepthEstimator = DepthEstimator.midas
    foreground_only: bool = True


class DepthLoss(Term):
    name = "depth"

    def forward(self, inputs: LossInputs) -> Tensor:
        mask = flat_images(inputs.mask) if self.config.foreground_only else None
        return pearson_depth_loss(flat_images(inputs.depth), flat_images(inputs.depth_prior), mask)
