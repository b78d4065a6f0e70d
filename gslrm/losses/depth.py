"""Depth supervision by correlation (seed 000 sections 6 and 7), scale- and shift-free as monocular depth needs.

Depth priors follow MiDaS's convention: relative inverse depth ("disparity", larger = closer, 0 = far/unknown).
- Depth loss, per view, d = rendered expected depth, d_m = the prior, both flattened:
  min(1 - rho(-d_m, d), 1 - rho(1 / (d_m + 200), d)).
- Pseudo-view loss: 1 - rho(d_render, -d_est) for a render from a camera no image was taken from, d_est estimated
  from that render (gradient flows through the estimator into the render).
rho is Pearson's correlation; with a mask it is computed over the masked pixels only (weighted moments).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.depth.pseudo import PseudoStack, orbit_cameras
from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images

__all__ = [
    "pearson", "pearson_depth_loss", "pseudo_depth_loss", "pseudo_ramp",
    "DepthConfig", "DepthLoss", "PseudoDepthConfig", "PseudoDepthLoss",
]  # fmt: skip

EPS = 1e-8
DISPARITY_SHIFT = 200.0  # the seed's 1 / (d_m + 200)
PSEUDO_RAMP_STEPS = 500.0


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


def pseudo_depth_loss(
    rendered: Float[Tensor, "n 1 h w"], estimated: Float[Tensor, "n 1 h w"], mask: Tensor | None = None
) -> Tensor:
    """Mean over views of 1 - rho(d_render, -d_est)."""
    weights = None if mask is None else (mask.flatten(1) > 0.5).to(rendered)
    return (1.0 - pearson(rendered.flatten(1), -estimated.flatten(1).to(rendered), weights)).mean()


def pseudo_ramp(step: int, start: int, end: int, interval: int) -> float:
    """The pseudo term's scale at ``step``: 0 off schedule (active when step % interval == 0 and start < step < end),
    else min((step - start) / 500, 1)."""
    if interval <= 0 or step % interval or not start < step < end:
        return 0.0
    return min((step - start) / PSEUDO_RAMP_STEPS, 1.0)


@dataclass
class DepthConfig(TermConfig):
    """The seed's ``depth_weight`` term. Priors are compared on the foreground only by default: empty pixels render
    depth 0 (near) while a prior calls the backdrop far, which would read as anti-correlation."""

    estimator: str = "midas"  # midas | precomputed | ground_truth
    foreground_only: bool = True


class DepthLoss(Term):
    name = "depth"

    def forward(self, inputs: LossInputs) -> Tensor:
        mask = flat_images(inputs.mask) if self.config.foreground_only else None
        return pearson_depth_loss(flat_images(inputs.depth), flat_images(inputs.depth_prior), mask)


@dataclass
class PseudoDepthConfig(TermConfig):
    """The seed's ``depth_pseudo_weight`` term and its schedule (defaults as FSGS, which the seed's loop follows)."""

    start: int = 2000  # start_sample_pseudo
    end: int = 9500  # end_sample_pseudo
    interval: int = 1  # sample_pseudo_interval
    foreground_only: bool = True  # correlate over the pseudo render's covered pixels (alpha > 0.5)
    stack_size: int = 64  # orbit positions in the pseudo stack
    seed: int = 0


class PseudoDepthLoss(Term):
    """One pseudo camera per sample from the stack, rendered; MiDaS on the render (gradient flowing into it);
    1 - rho(d_render, -d_est). A NaN value (e.g. a blank render) is skipped: the term returns 0 and counts it."""

    name = "pseudo_depth"

    def __init__(self, config: PseudoDepthConfig) -> None:
        super().__init__(config)
        self.stack = PseudoStack(config.stack_size, config.seed)
        self.estimator: torch.nn.Module | None = None  # the computer hands over its (frozen) MiDaS
        self.skipped = 0

    def forward(self, inputs: LossInputs) -> Tensor:
        batch = inputs.batch  # the orbit runs through all training cameras (refinement passes them as orbit_*)
        c2w, fxfycxcy = batch.get("orbit_c2w", batch["c2w"]), batch.get("orbit_fxfycxcy", batch["fxfycxcy"])
        cameras = [orbit_cameras(c2w[b], fxfycxcy[b], c2w.new_tensor([self.stack.pop()])) for b in range(len(c2w))]
        rendered = inputs.render_fn(torch.stack([c for c, _ in cameras]), torch.stack([k for _, k in cameras]))
        estimated = self.estimator(flat_images(rendered.rgb))
        mask = flat_images(rendered.alpha).detach() if self.config.foreground_only else None
        loss = pseudo_depth_loss(flat_images(rendered.depth), estimated, mask)
        if torch.isnan(loss):
            self.skipped += 1
            return loss.new_zeros(())
        return loss
