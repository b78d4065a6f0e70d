"""Coverage: the rendered alpha of every supervised view against that view's alpha from the data.

Why: FaceLift compares renders and targets on the same white background, so opaque white Gaussians in empty space
cost nothing and the model fills the background with them (eval's ``opacity_iou`` of a FaceLift-loss run: 0.11).
LGM trains its Gaussians with an MSE between the rendered alpha and the mask next to RGB and LPIPS, and 3DGS
practice for RGBA data does the same: where the data says empty space, the Gaussians must be transparent.
The target is the image's alpha channel: the RGBA alpha, or the loader's auto-mask for RGB images.

Kinds (means over every pixel of every supervised view; ``a`` rendered alpha, ``m`` target alpha):
    l1:  |a - m|
    l2:  (a - m)^2
    bce: -(m log a + (1 - m) log(1 - a)), with a clamped to [1e-4, 1 - 1e-4] (an empty pixel's a = 0 exactly, and
         the rasterizer stops at transmittance 1e-4, so 1 - a >= 1e-4 anyway)
    iou: 1 - sum(a m) / sum(a + m - a m) per view (the soft Jaccard loss), averaged over the views; 0 for a view
         where both are empty. The per-pixel kinds weigh a view's silhouette by its share of the image; this one
         weighs every view's silhouette alike and measures its errors against its size, as opacity IoU does

``foreground_weight`` f (per-pixel kinds): each pixel's error is weighed by 1 + (f - 1) m before the mean, so a
missed piece of the animal costs f times what a spill of the same size into empty space costs. Why: at 64 px the
default model's silhouette is more precise than complete (novel views: precision 0.87, recall 0.84), and the thin
parts it misses (legs, tail) are where foreground PSNR is lost (docs/training.md#what-the-foreground-psnr-misses).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig

__all__ = ["AlphaConfig", "AlphaLoss", "alpha_loss", "AlphaKind"]


class AlphaKind(StrEnum):
    l1 = "l1"
    l2 = "l2"
    bce = "bce"
    iou = "iou"


BCE_EPS = 1e-4


@dataclass
class AlphaConfig(TermConfig):
    weight: float = 0.0
    kind: AlphaKind = AlphaKind.l2
    foreground_weight: float = 1.0  # per-pixel kinds: the animal's pixels weigh this much, empty space 1

    def __post_init__(self) -> None:
        if not self.foreground_weight > 0:
            raise ValueError(f"loss.alpha.foreground_weight: expected > 0, not {self.foreground_weight}")
        if self.foreground_weight != 1.0 and self.kind == AlphaKind.iou:
            raise ValueError("loss.alpha.foreground_weight: the iou kind weighs no pixel; use l1, l2 or bce")


def alpha_loss(rendered: Tensor, target: Tensor, kind: str, foreground_weight: float = 1.0) -> Tensor:
    """Mean coverage error of rendered alpha against target alpha (any matching shapes); the per-pixel kinds weigh
    each pixel by 1 + (foreground_weight - 1) x target."""
    if kind in ("l1", "l2", "bce"):
        if kind == "l1":
            error = (rendered - target).abs()
        elif kind == "l2":
            error = (rendered - target) ** 2
        else:
            a = rendered.clamp(BCE_EPS, 1.0 - BCE_EPS)
            error = -(target * torch.log(a) + (1.0 - target) * torch.log1p(-a))
        if foreground_weight != 1.0:
            error = error * (1.0 + (foreground_weight - 1.0) * target)
        return error.mean()
    if kind == "iou":
        views = lambda t: t.reshape(-1, *t.shape[-2:]).flatten(1)  # noqa: E731  [views, pixels], channel 1
        a, m = views(rendered), views(target)
        intersection = (a * m).sum(1)
        union = (a + m - a * m).sum(1)
        return torch.where(union > 0, 1.0 - intersection / union.clamp_min(1e-12), torch.zeros_like(union)).mean()
    raise ValueError(f"loss.alpha.kind: expected one of {', '.join(AlphaKind)}, not {kind!r}")


class AlphaLoss(Term):
    name = "alpha"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.alpha is None:
            raise ValueError("loss.alpha needs the rendered alpha (LossInputs.alpha)")
        return alpha_loss(inputs.alpha, inputs.mask.to(inputs.alpha), self.config.kind, self.config.foreground_weight)
