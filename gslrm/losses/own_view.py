"""Own-view coverage: every input view's alpha drawn by that view's own pixel Gaussians alone, against its mask.

Why: a pixel's Gaussian lies on its own ray, so in its own view it covers its own pixel whatever its depth. In the
full render a thin part of the animal (a leg, the tail) seen by one input view is drawn by that view's Gaussians;
if their depth is off they land outside the silhouette in the other views, and the coverage term there pays them
to turn transparent, which costs only the few pixels of the thin part in its own view: the default run's
checkpoints lose the tail even in the input view that shows it (docs/training.md#the-tail-and-own-view-coverage).
This term takes that way out: a view's own Gaussians must draw its whole silhouette on their own, so what the other
views' terms can still change is where the Gaussians lie (their depth along the ray), not whether they exist.
Not FaceLift's term; off (weight 0) by default. Measured at make train's recipe (weight 1, one seed) it did what it
says (each input view's own Gaussians drew 85 % of its silhouette instead of 66 %) and the novel views did not gain:
the Gaussians it keeps on lie at the model's depths, so the novel views' recall rose by 0.01 and their precision fell
by as much (foreground PSNR -0.45 dB).

The same coverage kinds as ``loss.alpha`` (``gslrm.losses.alpha.alpha_loss``), over the input views' pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gslrm.losses.alpha import AlphaKind, alpha_loss
from gslrm.losses.base import LossInputs, Term, TermConfig
from gslrm.model.gaussians import Gaussians
from gslrm.render import render

__all__ = ["OwnViewConfig", "OwnViewLoss", "own_view_gaussians"]


@dataclass
class OwnViewConfig(TermConfig):
    weight: float = 0.0
    kind: AlphaKind = AlphaKind.l2


def own_view_gaussians(gaussians: Gaussians, views: int, pixels: int) -> Gaussians:
    """[b, tokens + views * pixels, ...] -> [b * views, pixels, ...]: each input view's pixel Gaussians as a scene of
    its own (the model lists the free token Gaussians first, then the pixels view by view)."""
    total = gaussians.means.shape[1]
    if total < views * pixels:
        raise ValueError(f"own_view: {total} Gaussians cannot hold {views} views of {pixels} pixel Gaussians")
    return gaussians.map(lambda t: t[:, total - views * pixels :].reshape(t.shape[0] * views, pixels, *t.shape[2:]))


class OwnViewLoss(Term):
    name = "own_view"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.batch is None:
            raise ValueError("loss.own_view needs the batch's cameras (LossInputs.batch)")
        batch, views, _, height, width = inputs.input_mask.shape
        scenes = own_view_gaussians(inputs.gaussians, views, height * width)
        c2w = inputs.batch["c2w"][:, :views].reshape(batch * views, 1, 4, 4)
        fxfycxcy = inputs.batch["fxfycxcy"][:, :views].reshape(batch * views, 1, 4)
        rendered = render(scenes, c2w, fxfycxcy, width, height, settings=inputs.render_settings, deferred=False)
        target = inputs.input_mask.reshape(batch * views, 1, 1, height, width).to(rendered.alpha)
        return alpha_loss(rendered.alpha, target, self.config.kind)
