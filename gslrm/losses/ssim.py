"""SSIM loss (pytorch-msssim: window 11, sigma 1.5, data range 1) and a masked variant that cannot go negative."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_msssim import SSIM
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter
from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images, foreground

__all__ = ["SSIMConfig", "SSIMLoss", "ssim_map", "masked_ssim"]

WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01**2, 0.03**2  # (K1 * data_range)^2, (K2 * data_range)^2 with data_range 1


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM [n, c, h-10, w-10] with pytorch-msssim's Gaussian window (its 'valid' filtering), so its
    mean equals ``pytorch_msssim.ssim(x, y, data_range=1)``."""
    window = _fspecial_gauss_1d(WINDOW, SIGMA).repeat([x.shape[1]] + [1] * 3).to(x)
    mu1, mu2 = gaussian_filter(x, window), gaussian_filter(y, window)
    sigma1 = gaussian_filter(x * x, window) - mu1 * mu1
    sigma2 = gaussian_filter(y * y, window) - mu2 * mu2
    sigma12 = gaussian_filter(x * y, window) - mu1 * mu2
    contrast_structure = (2 * sigma12 + C2) / (sigma1 + sigma2 + C2)
    return ((2 * mu1 * mu2 + C1) / (mu1 * mu1 + mu2 * mu2 + C1)) * contrast_structure


def masked_ssim(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Mean of the SSIM map over foreground window centres, clamped to [0, 1].

    Exactly: m = (alpha > 0.5) cropped by 5 pixels on each side (the centres of the 'valid' 11x11 windows);
    s = sum(m * ssim_map) / max(sum(m) * channels, 1); returns clamp(s, 0, 1). No pixel is filled with a
    "neutral" value (filling them drove a masked SSIM to -0.133), and the clamp keeps 1 - s in [0, 1].
    """
    half = WINDOW // 2
    m = foreground(mask)[..., half:-half, half:-half]
    values = ssim_map(x, y)
    s = (values * m).sum() / (m.sum() * values.shape[1]).clamp_min(1.0)
    return s.clamp(0.0, 1.0)


@dataclass
class SSIMConfig(TermConfig):
    masked: bool = False


class SSIMLoss(Term):
    """1 - clamp(SSIM, 0, 1)."""

    name = "ssim"

    def __init__(self, config: SSIMConfig) -> None:
        super().__init__(config)
        self.ssim = SSIM(win_size=WINDOW, win_sigma=SIGMA, data_range=1.0, size_average=True, channel=3)

    def forward(self, inputs: LossInputs) -> Tensor:
        render, target = flat_images(inputs.render), flat_images(inputs.target)
        if self.config.masked:
            return 1.0 - masked_ssim(render, target, flat_images(inputs.mask))
        return 1.0 - torch.clamp(self.ssim(render, target), 0.0, 1.0)
