"""The LossComputer: FaceLift's weighted sum of terms, its warmups, and the diagnostics it logs.

total = w_l2 l2 + w_perceptual perceptual + w_lpips lpips + w_ssim ssim + w_alpha alpha + w_pixelalign pixelalign
        + w_pointsdist pointsdist + w_image image + w_depth depth + ramp(step) w_pseudo_depth pseudo_depth
        + w_metric_depth metric_depth + w_own_view own_view + w_pixel_depth pixel_depth + w_mask_distance mask_distance
image, depth and pseudo_depth are the confidence/depth pipeline (``loss=confidence``). Their depth priors and
confidence maps are data: the data module attaches them to the batch (``gslrm/depth/priors.py``) and the terms read
them from there. metric_depth compares with the data's own depth (``data.load_depth=true``, synthetic data), and
pixel_depth the input pixels' own Gaussians with it (gslrm/losses/pixel_depth.py).
own_view renders each input view with its own pixel Gaussians alone (gslrm/losses/own_view.py); mask_distance
weighs alpha outside the silhouette by its distance to it (gslrm/losses/mask_distance.py).
Warmups (FaceLift's ``set_training_step``): before ``l2_warmup_steps`` the perceptual and LPIPS weights are 0;
before ``pointsdist_warmup_steps`` l2 = perceptual = 0, pointsdist = 0.1 and ``clip_xyz`` is off.
Disabled terms (weight 0) are not computed and their networks are not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gslrm.config import coerce
from gslrm.depth.estimators import MidasConfig, MidasEstimator
from gslrm.depth.priors import ConfidenceConfig
from gslrm.losses.alpha import AlphaConfig, AlphaLoss
from gslrm.losses.backgrounds import LossBackground
from gslrm.losses.base import LossInputs
from gslrm.losses.depth import DepthConfig, DepthLoss
from gslrm.losses.image import ImageConfig, ImageLoss
from gslrm.losses.l2 import L2Config, L2Loss
from gslrm.losses.lpips import LPIPSConfig, LPIPSLoss
from gslrm.losses.mask_distance import MaskDistanceConfig, MaskDistanceLoss
from gslrm.losses.metric_depth import MetricDepthConfig, MetricDepthLoss
from gslrm.losses.metrics import mask_iou, opacity_iou, psnr_from_mse
from gslrm.losses.own_view import OwnViewConfig, OwnViewLoss
from gslrm.losses.perceptual import PerceptualConfig, PerceptualLoss
from gslrm.losses.pixel_depth import PixelDepthConfig, PixelDepthLoss
from gslrm.losses.pixelalign import PixelAlignConfig, PixelAlignLoss
from gslrm.losses.pointsdist import PointsDistConfig, PointsDistLoss
from gslrm.losses.pseudo_depth import PseudoDepthConfig, PseudoDepthLoss, pseudo_ramp
from gslrm.losses.ssim import SSIMConfig, SSIMLoss

__all__ = ["LossConfig", "LossComputer"]

TERMS = {
    "l2": (L2Config, L2Loss),
    "perceptual": (PerceptualConfig, PerceptualLoss),
    "lpips": (LPIPSConfig, LPIPSLoss),
    "ssim": (SSIMConfig, SSIMLoss),
    "alpha": (AlphaConfig, AlphaLoss),
    "pixelalign": (PixelAlignConfig, PixelAlignLoss),
    "pointsdist": (PointsDistConfig, PointsDistLoss),
    "image": (ImageConfig, ImageLoss),
    "depth": (DepthConfig, DepthLoss),
    "pseudo_depth": (PseudoDepthConfig, PseudoDepthLoss),
    "metric_depth": (MetricDepthConfig, MetricDepthLoss),
    "own_view": (OwnViewConfig, OwnViewLoss),
    "pixel_depth": (PixelDepthConfig, PixelDepthLoss),
    "mask_distance": (MaskDistanceConfig, MaskDistanceLoss),
}
NESTED = {"confidence": ConfidenceConfig, "midas": MidasConfig}
POINTSDIST_WARMUP_WEIGHT = 0.1


@dataclass
class LossConfig:
    """``conf/loss/*.yaml``: one block per term (weight and options), plus the schedule."""

    l2: L2Config = field(default_factory=L2Config)
    perceptual: PerceptualConfig = field(default_factory=lambda: PerceptualConfig(weight=0.5))
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    ssim: SSIMConfig = field(default_factory=SSIMConfig)
    alpha: AlphaConfig = field(default_factory=AlphaConfig)  # coverage: rendered alpha vs the data's alpha
    pixelalign: PixelAlignConfig = field(default_factory=PixelAlignConfig)
    pointsdist: PointsDistConfig = field(default_factory=PointsDistConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    pseudo_depth: PseudoDepthConfig = field(default_factory=PseudoDepthConfig)
    metric_depth: MetricDepthConfig = field(default_factory=MetricDepthConfig)  # vs the data's z-depth (synthetic)
    own_view: OwnViewConfig = field(default_factory=OwnViewConfig)  # each input view's coverage by its own Gaussians
    pixel_depth: PixelDepthConfig = field(default_factory=PixelDepthConfig)  # input pixels' own depth (synthetic)
    mask_distance: MaskDistanceConfig = field(default_factory=MaskDistanceConfig)  # spill weighed by its distance
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)  # weights of the image term
    midas: MidasConfig = field(default_factory=MidasConfig)
    l2_warmup_steps: int = 0
    pointsdist_warmup_steps: int = 0  # FaceLift stage 1: 1000
    mask_iou_threshold: float = 0.1
    # the background of the rendered views and their targets in training: "data" (FaceLift: the inputs' own) or
    # "random" (a random colour per sample, inputs unchanged: opacity must follow the animal; gslrm/losses/backgrounds.py)
    background: LossBackground = LossBackground.data

    def __post_init__(self) -> None:
        # mappings come from code, tests and checkpoints; composed configs arrive as dataclasses already
        for name, (config_type, _) in TERMS.items():
            setattr(self, name, coerce(config_type, getattr(self, name), f"loss.{name}"))
        for name, config_type in NESTED.items():
            setattr(self, name, coerce(config_type, getattr(self, name), f"loss.{name}"))


class LossComputer(nn.Module):
    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        warmup_terms = {"pointsdist"} if config.pointsdist_warmup_steps > 0 else set()
        self.terms = nn.ModuleDict(
            {
                name: term_type(getattr(config, name))
                for name, (_, term_type) in TERMS.items()
                if getattr(config, name).weight > 0 or name in warmup_terms
            }
        )
        # the pseudo-view term estimates depth of its own renders (the data's priors come with the batch)
        self.image_estimator = MidasEstimator(config.midas) if "pseudo_depth" in self.terms else None
        if self.image_estimator is not None:
            self.terms["pseudo_depth"].estimator = self.image_estimator

    def weights(self, step: int) -> dict[str, float]:
        """The weight of every term at ``step`` (the warmup switches applied)."""
        weights = {name: getattr(self.config, name).weight for name in TERMS}
        if step < self.config.l2_warmup_steps:
            weights["perceptual"] = weights["lpips"] = 0.0
        if step < self.config.pointsdist_warmup_steps:
            weights["l2"] = weights["perceptual"] = 0.0
            weights["pointsdist"] = POINTSDIST_WARMUP_WEIGHT
        pseudo = self.config.pseudo_depth
        weights["pseudo_depth"] *= pseudo_ramp(step, pseudo.start, pseudo.end, pseudo.interval)
        return weights

    def clip_xyz_allowed(self, step: int) -> bool:
        return step >= self.config.pointsdist_warmup_steps

    def forward(self, inputs: LossInputs, step: int) -> dict[str, Tensor]:
        """``loss``, every active term as ``<term>_loss`` (FaceLift's key names: l2_loss, perceptual_loss, ...),
        ``norm_<term>`` = term / l2, and the diagnostics (no gradient)."""
        weights = self.weights(step)
        self.read_priors(inputs, weights)
        out: dict[str, Tensor] = {}
        total = inputs.render.new_zeros(())
        for name, term in self.terms.items():
            if weights[name] == 0:
                continue
            value = term(inputs)
            out[f"{name}_loss"] = value
            total = total + weights[name] * value
        out["loss"] = total
        with torch.no_grad():
            mse = torch.mean((inputs.render.detach() - inputs.target) ** 2)
            reference = out["l2_loss"].detach() if "l2_loss" in out else mse
            for name in self.terms:
                if f"{name}_loss" in out and name != "l2":
                    out[f"norm_{name}"] = out[f"{name}_loss"].detach() / reference.clamp_min(1e-12)
            render = inputs.render.detach()
            out["psnr"] = psnr_from_mse(mse)
            background = inputs.background[:, None].expand(-1, render.shape[1], -1)
            out["mask_iou"] = mask_iou(render, inputs.mask, background, self.config.mask_iou_threshold)
            if inputs.alpha is not None:
                out["opacity_iou"] = opacity_iou(inputs.alpha.detach(), inputs.mask)
            out["gt_min"], out["gt_max"], out["gt_mean"] = (
                inputs.target.min(),
                inputs.target.max(),
                inputs.target.mean(),
            )
            out["pred_min"], out["pred_max"], out["pred_mean"] = render.min(), render.max(), render.mean()
            out["gaussians_usage"] = inputs.gaussians.usage(0.05)
            if "pseudo_depth" in self.terms:
                out["pseudo_depth_skipped"] = torch.tensor(float(self.terms["pseudo_depth"].skipped))
        return out

    def read_priors(self, inputs: LossInputs, weights: dict[str, float]) -> None:
        """``inputs.depth_prior`` / ``inputs.confidence`` from the batch for the terms active at this step (the data
        module attaches them: gslrm.depth.priors)."""
        wanted = {"depth_prior": weights["depth"] > 0}
        wanted["confidence"] = weights["image"] > 0 and self.config.confidence.source != "none"
        for key, needed in wanted.items():
            if not needed or getattr(inputs, key) is not None:
                continue
            if inputs.batch is None or key not in inputs.batch:
                raise KeyError(
                    f"the batch has no {key}: it is data, attached by the data module "
                    "(gslrm.depth.priors.DepthPriors.for_loss(...).attach(batch))"
                )
            setattr(inputs, key, inputs.batch[key])
