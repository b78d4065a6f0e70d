"""Image metrics shared by training diagnostics, validation and eval (no gradient, except depth_abs_rel: the
metric_depth loss term is that metric)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "psnr_from_mse",
    "on_black",
    "iou",
    "mask_iou",
    "opacity_iou",
    "thin_parts",
    "thin_recall",
    "predicted_mask",
    "per_image_psnr",
    "per_image_masked_psnr",
    "depth_abs_rel",
    "aligned_depth_abs_rel",
]


def psnr_from_mse(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def on_black(rgb: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """An image [..., 3, h, w] composited over ``background`` [..., 3] through ``alpha`` [..., 1, h, w], moved onto
    black: ``rgb - background (1 - alpha)``, clamped to [0, 1]. Exact for renders (rgb = C + T bg, alpha = 1 - T)
    and for the loader's targets (rgb = fg alpha + bg (1 - alpha)). On black, opaque fog in empty space is error
    even where its colour matches the white background (``psnr_black``)."""
    return (rgb - background[..., :, None, None] * (1.0 - alpha)).clamp(0.0, 1.0)


def predicted_mask(render: Tensor, background: Tensor, threshold: float = 0.1) -> Tensor:
    """Foreground of a render [..., 3, h, w]: mean |render - background| over channels > threshold."""
    return ((render - background[..., :, None, None]).abs().mean(dim=-3, keepdim=True) > threshold).float()


def iou(predicted: Tensor, truth: Tensor) -> Tensor:
    """IoU of two boolean masks over all their elements (0 when both are empty)."""
    return (predicted & truth).sum() / (predicted | truth).sum().clamp_min(1)


def mask_iou(render: Tensor, target_alpha: Tensor, background: Tensor, threshold: float = 0.1) -> Tensor:
    """IoU of the predicted mask (the colour difference above) with alpha > 0.5 over the whole batch: blind to an
    animal of the background's colour, which ``opacity_iou`` sees."""
    return iou(predicted_mask(render, background, threshold) > 0.5, target_alpha > 0.5)


def opacity_iou(rendered_alpha: Tensor, target_alpha: Tensor) -> Tensor:
    """IoU of rendered alpha > 0.5 with ground-truth alpha > 0.5 (where the Gaussians are opaque, not their colour)."""
    return iou(rendered_alpha > 0.5, target_alpha > 0.5)


def thin_parts(target_alpha: Tensor, width: int = 3) -> Tensor:
    """The foreground pixels (alpha > 0.5) of [n, 1, h, w] that belong to parts narrower than ``width`` pixels: those a
    morphological opening with a width x width square removes. At 64 px that is the tail and the thin ends of the legs,
    which the opacity IoU hardly weighs (width 3: about 9 % of the animal's pixels in the rodent's validation views)."""
    if width < 2:
        raise ValueError(f"thin_parts: width {width} must be at least 2 pixels")
    fg = (target_alpha > 0.5).to(torch.float32)
    low, high = (width - 1) // 2, width // 2  # an even width: the square's extra row and column go to one side
    # erosion = 1 - dilation of the background; outside the image is background, so parts at the border erode too
    eroded = 1 - torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(1 - fg, (low, high, low, high), value=1.0), width, stride=1
    )
    opened = torch.nn.functional.max_pool2d(torch.nn.functional.pad(eroded, (high, low, high, low)), width, stride=1)
    return (fg > 0) & (opened == 0)


def thin_recall(rendered_alpha: Tensor, target_alpha: Tensor, width: int = 3) -> Tensor:
    """The share of the thin parts' pixels (``thin_parts``) that the render draws (alpha > 0.5); NaN without any."""
    thin = thin_parts(target_alpha, width)
    count = thin.sum()
    if count == 0:
        return torch.tensor(float("nan"))
    return ((rendered_alpha > 0.5) & thin).sum() / count


def per_image_psnr(render: Tensor, target: Tensor) -> Tensor:
    """PSNR of each image [n, 3, h, w] after clipping both to [0, 1] (FaceLift's eval metric)."""
    mse = ((render.clamp(0, 1) - target.clamp(0, 1)) ** 2).flatten(1).mean(1)
    return psnr_from_mse(mse)


def per_image_masked_psnr(render: Tensor, target: Tensor, alpha: Tensor) -> Tensor:
    """PSNR over foreground pixels (alpha > 0.5) of each image; NaN for an image without foreground."""
    m = (alpha > 0.5).float()
    squared = ((render.clamp(0, 1) - target.clamp(0, 1)) ** 2 * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1) * render.shape[1]
    mse = squared / count.clamp_min(1.0)
    return torch.where(count > 0, psnr_from_mse(mse), torch.full_like(mse, float("nan")))


def depth_abs_rel(rendered: Tensor, truth: Tensor, alpha: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean |d - d_gt| / d_gt over pixels that are foreground (alpha > 0.5) with a known depth (d_gt > 0); with
    ``weight`` (broadcast like ``rendered``) the mean weighted by it."""
    valid = ((alpha > 0.5) & (truth > 0)).float()  # fp32 even under bf16: the count stays exact
    if weight is not None:
        valid = valid * weight
    error = (rendered - truth).abs() / truth.clamp_min(1e-6)
    return (error * valid).sum() / valid.sum().clamp_min(1)


def aligned_depth_abs_rel(rendered: Tensor, truth: Tensor, alpha: Tensor) -> Tensor:
    """``depth_abs_rel`` after the least-squares scale and shift of each view's rendered depth onto the truth (over
    the same pixels): the error of the depth's shape, which is all a correlation loss can see."""
    valid = ((alpha > 0.5) & (truth > 0)).flatten(1).to(rendered.dtype)  # [views, pixels]
    d, g = rendered.flatten(1), truth.flatten(1)
    count = valid.sum(1, keepdim=True).clamp_min(1)
    d_mean, g_mean = (d * valid).sum(1, keepdim=True) / count, (g * valid).sum(1, keepdim=True) / count
    scale = (valid * (d - d_mean) * (g - g_mean)).sum(1, keepdim=True) / (valid * (d - d_mean) ** 2).sum(
        1, keepdim=True
    ).clamp_min(1e-12)
    aligned = scale * (d - d_mean) + g_mean
    return depth_abs_rel(aligned.view_as(rendered), truth, alpha)
