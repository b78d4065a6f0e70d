"""Confidence-weighted image losses: L1 / L2 / SSIM weighted per pixel by a map c in [0, 1] (1 = trusted).

weighted(loss_map, c) = sum(loss_map * c) / (sum(c) + 1e-8), with c broadcast to the loss map's shape, so a
constant c gives the plain mean. (Dividing by the sum of c over [H, W] while summing the loss over [C, H, W] would
inflate the loss by the channel count: c is broadcast first, which is the weighted mean.)

Image loss = (1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM), SSIM being the (weighted) similarity, taken
once: a helper that returned 1 - SSIM, subtracted from 1 again, would reward dissimilar images.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images, foreground
from gslrm.losses.ssim import WINDOW, ssim_map

__all__ = [
    "broadcast_confidence",
    "weighted_mean",
    "l1_confidence",
    "l2_confidence",
    "ssim_confidence",
    "image_loss",
    "ImageConfig",
    "ImageLoss",
]

EPS = 1e-8


def broadcast_confidence(confidence: Tensor, like: Float[Tensor, "n c h w"]) -> Tensor:
    """A confidence map [H, W], [N, H, W] or [N, 1, H, W] as a [N, C, H, W] tensor shaped like ``like``
    (resized bilinearly when its size differs)."""
    c = confidence.to(like)
    if c.dim() == 2:
        c = c[None, None]
    elif c.dim() == 3:
        c = c[:, None]
    elif c.dim() != 4:
        raise ValueError(f"confidence: expected [H,W], [N,H,W] or [N,1,H,W], got shape {tuple(confidence.shape)}")
    if c.shape[-2:] != like.shape[-2:]:
        c = F.interpolate(c, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return c.expand_as(like)


def weighted_mean(loss_map: Tensor, confidence: Tensor | None) -> Tensor:
    """sum(loss * c) / (sum(c) + 1e-8), c broadcast to ``loss_map``; the plain mean without a map."""
    if confidence is None:
        return loss_map.mean()
    c = broadcast_confidence(confidence, loss_map)
    return (loss_map * c).sum() / (c.sum() + EPS)


def l1_confidence(render: Tensor, target: Tensor, confidence: Tensor | None = None) -> Tensor:
    return weighted_mean((render - target).abs(), confidence)


def l2_confidence(render: Tensor, target: Tensor, confidence: Tensor | None = None) -> Tensor:
    return weighted_mean((render - target) ** 2, confidence)


def ssim_confidence(render: Tensor, target: Tensor, confidence: Tensor | None = None) -> Tensor:
    """Confidence-weighted mean of the per-pixel SSIM map (a similarity in [-1, 1]). The map is 'valid' (window
    centres only), so c is taken at those centres. Without c: the plain mean (pytorch-msssim's SSIM)."""
    values = ssim_map(render, target)
    if confidence is None:
        return values.mean()
    half = WINDOW // 2
    c = broadcast_confidence(confidence, render)[..., half:-half, half:-half]
    return (values * c).sum() / (c.sum() + EPS)


def image_loss(
    render: Float[Tensor, "n 3 h w"],
    target: Float[Tensor, "n 3 h w"],
    confidence: Tensor | None = None,
    lambda_dssim: float = 0.2,
    norm: str = "l1",
) -> Tensor:
    """(1 - lambda) * L1 (or L2) + lambda * (1 - SSIM), both confidence-weighted when a map is given."""
    if norm == "l1":
        pixel = l1_confidence(render, target, confidence)
    elif norm == "l2":
        pixel = l2_confidence(render, target, confidence)
    else:
        raise ValueError(f"norm: expected 'l1' or 'l2', got {norm!r}")
    if lambda_dssim == 0:
        return pixel
    return (1.0 - lambda_dssim) * pixel + lambda_dssim * (1.0 - ssim_confidence(render, target, confidence))


class ImageNorm(StrEnum):
    l1 = "l1"
    l2 = "l2"


@dataclass
class ImageConfig(TermConfig):
    lambda_dssim: float = 0.2  # as 3DGS
    norm: ImageNorm = ImageNorm.l1
    masked: bool = False  # weight by the foreground too (alone when there is no confidence map)


class ImageLoss(Term):
    """(1 - lambda) * L1 + lambda * (1 - SSIM), confidence-weighted when ``loss.confidence.source`` gives maps."""

    name = "image"

    def forward(self, inputs: LossInputs) -> Tensor:
        render, target = flat_images(inputs.render), flat_images(inputs.target)
        confidence = flat_images(inputs.confidence) if inputs.confidence is not None else None
        if self.config.masked:  # the foreground as (a factor of) the weights
            mask = foreground(flat_images(inputs.mask))
            confidence = mask if confidence is None else confidence * mask
        return image_loss(render, target, confidence, self.config.lambda_dssim, self.config.norm)
