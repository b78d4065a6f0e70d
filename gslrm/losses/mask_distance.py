"""Distance to the silhouette: rendered alpha outside the true silhouette, weighed by how far outside it lies.

Why: the coverage term (``loss.alpha``) and the MSE on white give a Gaussian that lies wholly outside the silhouette
no pull in any direction: its spill costs the same wherever it lies, so the only way down is to fade. A thin part's
Gaussians (a tail 1-2 px wide at 64 px) land 3-4 px beside the tail in the other views when their depth is 4 % off
(docs/training.md#thin-parts-a-measure-and-the-depth-they-need), and the measured outcome is faint Gaussians
(median opacity 0.04) that draw nothing. Weighing the spill by its distance to the silhouette gives it a slope: a
Gaussian lowers the term by moving towards the animal, and since it lies on its own pixel's ray, that move in
another view is a change of its depth. Silhouette distance fields are how mesh and contour fitting get such a pull
(chamfer-style losses); this is the one-sided form on the rendered alpha.

    mask_distance = mean over pixels of  a * min(d, max_px) / max_px

``a`` the rendered alpha, ``d`` the Euclidean distance in pixels from the pixel to the nearest pixel of the view
where the target alpha is above zero (0 there), pixels beyond the image counted as empty. Not FaceLift's term; off
(weight 0) by default: at make train's recipe (weight 1, one seed) the thin parts did not move (thin_recall 0.142
against 0.147) and foreground PSNR gained 0.13 dB, inside the seeds' spread
(docs/training.md#the-thin-parts-can-be-drawn-the-runs-fit-too-little-then-too-narrowly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig

__all__ = ["MaskDistanceConfig", "MaskDistanceLoss", "distance_to_mask", "mask_distance_loss"]


@dataclass
class MaskDistanceConfig(TermConfig):
    weight: float = 0.0
    max_px: int = 8  # distances are capped here (pixels of the view as rendered) and the term divided by it

    def __post_init__(self) -> None:
        if not 1 <= self.max_px <= 64:
            raise ValueError(f"loss.mask_distance.max_px: expected 1 to 64 pixels, not {self.max_px}")


def distance_to_mask(mask: Tensor, max_px: int) -> Tensor:
    """Euclidean distance in pixels from every pixel of ``mask`` [..., h, w] to its nearest pixel with mask > 0,
    capped at ``max_px``: 0 on the mask, ``max_px`` where no mask pixel is nearer (or the view has none)."""
    *lead, height, width = mask.shape
    cap = float(max_px)
    covered = F.pad((mask > 0).reshape(-1, 1, height, width), (max_px, max_px, 0, 0))
    # separable: first each pixel's distance to the nearest covered pixel of its own row (capped) ...
    row = torch.full((covered.shape[0], 1, height, width), cap, device=mask.device)
    for dx in range(-max_px, max_px + 1):
        row = torch.where(covered[..., max_px + dx : max_px + dx + width], row.clamp_max(abs(dx)), row)
    # ... then the nearest over the rows above and below: d^2 = min over dy of dy^2 + row(y + dy)^2
    row = F.pad(row, (0, 0, max_px, max_px), value=cap)
    squared = torch.full_like(row[..., :height, :], cap**2)
    for dy in range(-max_px, max_px + 1):
        squared = torch.minimum(squared, dy**2 + row[..., max_px + dy : max_px + dy + height, :] ** 2)
    distance = squared.sqrt().clamp_max(cap)
    return distance.reshape(*lead, height, width)


def mask_distance_loss(rendered: Tensor, target: Tensor, max_px: int) -> Tensor:
    """mean(a * min(d, max_px) / max_px) of rendered alpha ``a`` against target alpha (matching shapes [..., h, w])."""
    distance = distance_to_mask(target.detach(), max_px).to(rendered)
    return (rendered * distance).mean() / max_px


class MaskDistanceLoss(Term):
    name = "mask_distance"

    def forward(self, inputs: LossInputs) -> Tensor:
        if inputs.alpha is None:
            raise ValueError("loss.mask_distance needs the rendered alpha (LossInputs.alpha)")
        return mask_distance_loss(inputs.alpha, inputs.mask, self.config.max_px)
