"""Per-scene refinement: a 3DGS-style fitting loop, started from the model's predicted Gaussians instead of a point cloud.

Each iteration pops a random training view from the viewpoint stack (refilled when empty), renders it, and applies the
``loss`` config's terms (the ``confidence`` pipeline: confidence-weighted L1 + D-SSIM, Pearson depth against the prior,
and on its schedule the pseudo-view depth term on cameras between the training views); Adam steps the Gaussians'
parameters with per-parameter learning rates. Views listed in ``holdout_views`` are never fitted (nor fed to the model)
and are scored before and after, with the depth error against ground truth when the data has it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from tqdm import tqdm

from gslrm.config import coerce
from gslrm.depth.priors import DepthPriors
from gslrm.losses.base import LossInputs
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.metrics import aligned_depth_abs_rel, depth_abs_rel, mask_iou
from gslrm.model.gaussians import Gaussians, save_ply
from gslrm.model.gslrm import GSLRM
from gslrm.predict import predict_gaussians, renderer
from gslrm.render import RenderConfig, RenderOutput
from gslrm.turntable import VideoFormat, render_turntable, save_turntable
from gslrm.viz import error_panel, save_png

log = logging.getLogger(__name__)

__all__ = ["RefineConfig", "GaussianParameters", "refine_sample", "ViewpointStack"]


@dataclass
class LearningRates:
    """Adam learning rates per parameter (3D Gaussian Splatting's; ``means`` is multiplied by the scene extent,
    1.1 x the largest camera distance from the origin, as 3DGS does)."""

    means: float = 1.6e-4  # constant: 3DGS decays it over 30k iterations, refinement runs a few hundred
    features: float = 2.5e-3
    opacities: float = 0.05  # on the logit
    scales: float = 5e-3  # on the log scale
    quats: float = 1e-3


@dataclass
class RefineConfig:
    output_dir: str = "."
    iterations: int = 100
    holdout_views: list[int] = field(default_factory=lambda: [5])  # view slots (inputs first) never fitted
    lr: LearningRates = field(default_factory=LearningRates)
    seed: int = 0
    turntable_views: int = 60
    turntable_elevation: float = 20.0
    video_format: VideoFormat = VideoFormat.mp4

    def __post_init__(self) -> None:
        self.lr = coerce(LearningRates, self.lr)  # a mapping from code; composed configs arrive as dataclasses


class ViewpointStack:
    """A viewpoint stack: pop a random view; refill with all of them when empty (every view once per round)."""

    def __init__(self, views: list[int], seed: int = 0) -> None:
        self.views, self.rng, self.stack = list(views), np.random.default_rng(seed), []

    def pop(self) -> int:
        if not self.stack:
            self.stack = list(self.views)
        return self.stack.pop(int(self.rng.integers(len(self.stack))))


class GaussianParameters(nn.Module):
    """Unconstrained parameters of one sample's Gaussians: means, SH features, log scales, raw quaternions, logit
    opacities; ``gaussians()`` applies the activations (exp, normalize, sigmoid)."""

    def __init__(self, gaussians: Gaussians) -> None:
        super().__init__()
        g = gaussians.detach().float()
        self.means = nn.Parameter(g.means.clone())
        self.features = nn.Parameter(g.features.clone())
        self.scales = nn.Parameter(g.scales.clamp_min(1e-8).log())
        self.quats = nn.Parameter(g.quats.clone())
        self.opacities = nn.Parameter(torch.logit(g.opacities.clamp(1e-4, 1 - 1e-4)))

    def gaussians(self) -> Gaussians:
        return Gaussians(
            means=self.means,
            features=self.features,
            scales=self.scales.exp(),
            quats=nn.functional.normalize(self.quats, dim=-1),
            opacities=torch.sigmoid(self.opacities),
        )

    def optimizer(self, lr: LearningRates, extent: float) -> torch.optim.Adam:
        groups = [
            {"params": [self.means], "lr": lr.means * extent, "name": "means"},
            {"params": [self.features], "lr": lr.features, "name": "features"},
            {"params": [self.opacities], "lr": lr.opacities, "name": "opacities"},
            {"params": [self.scales], "lr": lr.scales, "name": "scales"},
            {"params": [self.quats], "lr": lr.quats, "name": "quats"},
        ]
        return torch.optim.Adam(groups, eps=1e-15)


def _views(sample: dict, views: list[int]) -> dict:
    """The batch restricted to ``views`` (tensors with a view axis, and the image names)."""
    out = {}
    for key, value in sample.items():
        if key == "names":
            out[key] = [[value[0][v] for v in views]]
        elif isinstance(value, Tensor) and value.dim() >= 2 and key != "bg_color":
            out[key] = value[:, views]
        else:
            out[key] = value
    return out


def _render(gaussians: Gaussians, sample: dict, settings: RenderConfig) -> RenderOutput:
    """``gaussians`` seen from every camera of ``sample``."""
    return renderer(gaussians, sample, settings)(sample["c2w"], sample["fxfycxcy"])


@torch.no_grad()
def score(gaussians: Gaussians, sample: dict, settings: RenderConfig) -> tuple[dict[str, float], RenderOutput]:
    """PSNR / SSIM / mask IoU (and depth abs-rel against ground truth when present) over ``sample``'s views."""
    rendered = _render(gaussians, sample, settings)
    pred = rendered.rgb[0].float().clamp(0, 1)
    image = sample["image"][0].float()
    target, alpha = image[:, :3], image[:, 3:4]
    background = sample["bg_color"][0].expand(len(pred), 3)
    metrics = {
        "psnr": float(peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean()),
        "ssim": float(structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none").mean()),
        "mask_iou": float(mask_iou(pred, alpha, background)),
    }
    if "depth" in sample:
        metrics["depth_abs_rel"] = float(depth_abs_rel(rendered.depth[0], sample["depth"][0], alpha))
        metrics["depth_abs_rel_aligned"] = float(aligned_depth_abs_rel(rendered.depth[0], sample["depth"][0], alpha))
    return metrics, rendered


def refine_sample(
    model: GSLRM,
    sample: dict,
    num_input_views: int,
    loss_config: LossConfig,
    config: RefineConfig,
    settings: RenderConfig,
) -> dict:
    """Refine one sample (a batch of 1 from the dataset, on the model's device); writes the outputs and returns
    the report."""
    views = sample["image"].shape[1]
    holdout = sorted(set(config.holdout_views))
    inputs = list(range(num_input_views))
    if not holdout or any(not 0 <= v < views for v in holdout) or set(holdout) & set(inputs):
        raise ValueError(
            f"refine.holdout_views: {holdout} must be view slots in {num_input_views}..{views - 1} (not the model's inputs)"
        )
    fit = [v for v in range(views) if v not in holdout]
    torch.manual_seed(config.seed)
    with torch.no_grad():
        predicted = predict_gaussians(model, sample, num_input_views).gaussians.float()
    held_out, fitted = _views(sample, holdout), _views(sample, fit)
    before, before_render = score(predicted, held_out, settings)
    before_fit, _ = score(predicted, fitted, settings)

    parameters = GaussianParameters(predicted)
    extent = 1.1 * float(sample["c2w"][0, :, :3, 3].norm(dim=-1).max())
    optimizer = parameters.optimizer(config.lr, extent)
    computer = LossComputer(loss_config).to(sample["image"].device)
    priors = DepthPriors.for_loss(loss_config, midas_estimator=computer.image_estimator)
    if priors is not None:  # the depth prior and confidence of every view, as training batches get them
        sample = priors.attach(sample)
    stack = ViewpointStack(fit, config.seed)
    history: dict[str, list[float]] = {}
    started = time.perf_counter()
    for step in tqdm(range(config.iterations), desc="refining", leave=False):
        view = stack.pop()
        one = _views(sample, [view])
        one["orbit_c2w"], one["orbit_fxfycxcy"] = fitted["c2w"], fitted["fxfycxcy"]  # the pseudo cameras' orbit
        gaussians = parameters.gaussians()
        rendered = _render(gaussians, one, settings)
        terms = computer(_loss_inputs(one, gaussians, rendered, settings), step)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for name, value in terms.items():
            if name == "loss" or name.endswith("_loss"):
                history.setdefault(name, []).append(float(value.detach()))
    seconds = time.perf_counter() - started

    refined = parameters.gaussians().detach()
    after, after_render = score(refined, held_out, settings)
    after_fit, _ = score(refined, fitted, settings)
    report = {
        "holdout_views": holdout,
        "fit_views": fit,
        "iterations": config.iterations,
        "seconds": round(seconds, 2),
        "heldout_before": before,
        "heldout_after": after,
        "fit_before": before_fit,
        "fit_after": after_fit,
        "loss_first": {k: v[0] for k, v in history.items()},
        "loss_last50": {k: float(np.mean(v[-50:])) for k, v in history.items()},
        "loss": asdict(loss_config),
        "refine": asdict(config),
    }
    write_outputs(
        Path(config.output_dir), report, predicted, refined, held_out, before_render, after_render, config, settings
    )
    return report


def _loss_inputs(one: dict, gaussians: Gaussians, rendered: RenderOutput, settings: RenderConfig) -> LossInputs:
    image = one["image"]
    render_fn = renderer(gaussians, one, settings)
    return LossInputs(
        render=rendered.rgb,
        target=image[:, :, :3],
        mask=image[:, :, 3:4],
        background=one["bg_color"],
        gaussians=gaussians,
        pixel_means=None,
        ray_o=None,
        ray_d=None,
        input_mask=None,
        depth=rendered.depth,
        alpha=rendered.alpha,
        batch=one,
        render_fn=render_fn,
    )


def write_outputs(folder: Path, report, predicted, refined, held_out, before, after, config, settings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "refine_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    save_ply(folder / "gaussians_predicted.ply", predicted)
    save_ply(folder / "gaussians_refined.ply", refined)
    target = held_out["image"][0, :, :3]
    titles = [f"held-out {v}" for v in report["holdout_views"]]
    save_png(error_panel(target, before.rgb[0], titles=titles).image, folder / "heldout_predicted.png")
    save_png(error_panel(target, after.rgb[0], titles=titles).image, folder / "heldout_refined.png")
    frames = render_turntable(
        refined,
        config.turntable_views,
        target.shape[-1],
        config.turntable_elevation,
        background=held_out["bg_color"][0],
        settings=settings,
    )
    save_turntable(frames, folder, "turntable_refined", config.video_format)
    log.info(
        "held-out views %s: PSNR %.2f -> %.2f, SSIM %.3f -> %.3f%s (files in %s)",
        report["holdout_views"],
        report["heldout_before"]["psnr"],
        report["heldout_after"]["psnr"],
        report["heldout_before"]["ssim"],
        report["heldout_after"]["ssim"],
        "".join(
            f", depth abs-rel {report['heldout_before'][k]:.4f} -> {report['heldout_after'][k]:.4f}"
            for k in ("depth_abs_rel",)
            if k in report["heldout_after"]
        ),
        folder,
    )
