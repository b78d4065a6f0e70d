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

__all__ = ["MetricDepthConfig", "MetricDepthLoss", "metric_depth_loss"]


@dataclass
class MetricDepthConfig(TermConfig):
    """``loss.metric_depth``: off (weight 0) by default; it needs ``data.load_depth=true``."""


def metric_depth_loss(rendered: Tensor, truth: Tensor, mask: Tensor) -> Tensor:
    """Mean |d - d_gt| / d_gt over the pixels where the target is the animal (alpha > 0.5) and its depth is known
    (d_gt > 0). Relative, so its weight does not depend on the scene's units; 0 when no pixel qualifies."""
    valid = ((mask > 0.5) & (truth > 0)).to(rendered.dtype)
    error = (rendered - truth).abs() / truth.clamp_min(1e-6)
    return (error * valid).sum() / valid.sum().clamp_min(1.0)


class MetricDepthLoss(Term):
    name = "metric_depth"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.depth is None:
            raise ValueError("loss.metric_depth needs the rendered depth (LossInputs.depth)")
        if inputs.batch is None or "depth" not in inputs.batch:
            raise KeyError("loss.metric_depth: the batch has no depth: set data.load_depth=true")
        truth = inputs.batch["depth"].to(inputs.depth)
        return metric_depth_loss(inputs.depth, truth, inputs.mask.to(inputs.depth))
