"""The metric depth term: each supervised view's rendered expected z-depth against the data's own z-depth
(``data.load_depth=true``: the rodent generator renders it), as relative L1 on the animal's pixels.

Unlike the depth term (``loss.depth``, a correlation against a monocular prior that knows neither scale nor shift),
this one says where the surface is, in the units every view shares: a novel view's depth error is an error of the 3D
shape, which the image terms only see where it moves a silhouette edge or a colour. It needs metric depth, which
synthetic data has and a rig's recording does not; it is a pre-training term.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig
from gslrm.losses.metrics import depth_abs_rel

__all__ = ["MetricDepthConfig", "MetricDepthLoss"]


@dataclass
class MetricDepthConfig(TermConfig):
    """``loss.metric_depth``: off (weight 0) by default; it needs ``data.load_depth=true``."""


class MetricDepthLoss(Term):
    name = "metric_depth"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.depth is None:
            raise ValueError("loss.metric_depth needs the rendered depth (LossInputs.depth)")
        if inputs.batch is None or "depth" not in inputs.batch:
            raise KeyError("loss.metric_depth: the batch has no depth: set data.load_depth=true")
        # validation's depth error (val/depth_abs_rel) as the loss, over the target's animal pixels instead of the
        # render's: mean |d - d_gt| / d_gt, relative, so its weight does not depend on the scene's units
        return depth_abs_rel(inputs.depth, inputs.batch["depth"].to(inputs.depth), inputs.mask)
