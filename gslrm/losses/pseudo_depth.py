"""The pseudo-view depth term: depth of a render from a camera no image was taken from, correlated with a monocular
estimate of that render (gradient flows through the estimator into the render), ramped in over a step window.

1 - rho(d_render, -d_est), rho Pearson's correlation over the render's covered pixels (``depth.pearson``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.depth.pseudo import PseudoStack, orbit_cameras
from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images
from gslrm.losses.depth import pearson

__all__ = ["pseudo_depth_loss", "pseudo_ramp", "PseudoDepthConfig", "PseudoDepthLoss"]

PSEUDO_RAMP_STEPS = 500.0


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
class PseudoDepthConfig(TermConfig):
    """The pseudo-view term's options and its schedule (FSGS's defaults: from step 2000 to 9500, every step)."""

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
