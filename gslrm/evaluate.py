"""Scoring a checkpoint on a split: per-sample PSNR / SSIM / LPIPS / mask IoU on all target views and on the novel
ones (targets that were not inputs), means over the split, and pictures of the first samples.

Definitions (FaceLift's): each metric is computed per target view on RGB clipped to [0, 1],
averaged over the sample's views, then over the samples. PSNR and SSIM are torchmetrics' (SSIM: Gaussian 11x11
window, sigma 1.5, data range 1). LPIPS is the ``lpips`` package's LPIPS(net="vgg", version 0.1) on [-1, 1] inputs,
FaceLift's metric; torchmetrics' LPIPS wraps the same linear heads but fetches its VGG16 backbone itself, while ours
is read from the torch hub cache or ``eval.lpips_weights_path`` and never downloaded. Mask IoU pools the sample's views.
With several devices, every rank's rows are gathered (padding duplicates of the distributed sampler dropped) and
the means are taken once over all samples.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import lightning as L
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gslrm.data.datamodule import is_empty
from gslrm.data.dataset import BACKGROUNDS
from gslrm.losses.backgrounds import recomposite
from gslrm.losses.metrics import (
    mask_iou,
    on_black,
    opacity_iou,
    per_image_masked_psnr,
    per_image_psnr,
    thin_recall,
)
from gslrm.model.gaussians import prune, save_ply
from gslrm.model.gslrm import GSLRM
from gslrm.predict import predict_and_render
from gslrm.render import RenderConfig, render
from gslrm.session.scoring import TRUTH_FILE, frame_positions, read_truth, temporal_stability
from gslrm.turntable import VideoFormat, render_turntable, save_turntable
from gslrm.viz import ERROR_VMAX, error_panel, image_row, save_png, view_titles

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "Evaluator", "METRICS", "LPIPS_BACKBONE"]

METRICS = (
    "psnr",
    "psnr_masked",
    "psnr_white",
    "psnr_masked_white",
    "psnr_black",
    "ssim",
    "lpips",
    "mask_iou",
    "opacity_iou",
    "opacity_iou_white",
    "thin_recall",
)
VIEW_SETS = {
    "": "all target views",
    "_novel": "target views that were not inputs",
    "_input": "the input views",
    "_orbit": "held-out orbit views around the rig (never inputs, never supervised; data with <sample>/orbit/ only)",
    "_holdout": "the camera eval.holdout_view names, never an input (a recording's per-frame score over time)",
}
# psnr_masked: over foreground pixels (alpha > 0.5) only; *_white: the same metric of an all-background (white)
# prediction, the baseline a model must beat (on real rigs the animal covers 2-13% of the frame, so whole-image
# PSNR mostly measures the background). mask_iou counts pixels whose rendered colour differs from the background by
# > 0.1: it cannot see a white animal on a white background. opacity_iou compares the rendered opacity (alpha > 0.5)
# with the ground-truth mask instead. FaceLift's losses never supervise opacity and every background pixel becomes an
# opaque white Gaussian, so for FaceLift-style training it is about the animal's share of the image: it shows whether
# the background is empty space, not whether the animal's shape is right. opacity_iou_white is the all-white
# prediction's (empty space everywhere: 0). psnr_black: the render moved onto black through its rendered alpha against
# the ground truth moved onto black through its alpha, so opaque fog is error even where it is white. thin_recall: the
# share of the true silhouette's thin parts (narrower than 3 px: at 64 px the tail, the feet, the ears) that the render
# draws (alpha > 0.5): they are about 9 % of the animal's pixels at 64 px, so the IoU cannot say whether they are there.


class VisualBackground(StrEnum):
    """What panels, turntables and the viewer draw on (black shows fog that white hides)."""

    white = "white"
    black = "black"
    grey = "grey"


class LpipsMode(StrEnum):
    pretrained = "pretrained"  # VGG16 from the hub cache or eval.lpips_weights_path
    random = "random"  # a random VGG16: tests only, not a metric
    off = "off"


LPIPS_BACKBONE = "lpips 0.1.4 LPIPS(net='vgg', version='0.1'), torchvision VGG16 ImageNet weights, inputs in [-1, 1]"


@dataclass
class EvalConfig:
    output_dir: str = "."
    checkpoint: str = ""  # recorded in metrics.json
    split: str = "val"
    num_visuals: int = 4  # panels, turntables (and .ply) for the first K samples of the split
    turntable_views: int = 150  # FaceLift's evaluation turntable
    render_size: int = 256  # pixels of panels and turntables, whatever the training size (intrinsics scaled)
    # the model's input views resized to this many pixels across (e.g. the training size) while the targets are
    # scored at data.image_size: runs trained at different sizes compared at one evaluation size; null: data size
    input_size: int | None = None
    turntable_elevation: float = 20.0
    video_format: VideoFormat = VideoFormat.mp4
    fps: int = 30
    save_ply: bool = False  # gaussians.ply per visualized sample (min_opacity and FaceLift's crop box 0.91)
    min_opacity: float = 0.02  # the .ply and the turntables keep Gaussians above it (0.02: FaceLift's export filter)
    background: VisualBackground = VisualBackground.white  # panels and turntables
    # *_orbit metrics from <sample>/orbit/; null: when the split's first sample has it
    orbit: bool | None = None
    lpips: LpipsMode = LpipsMode.pretrained
    lpips_weights_path: str | None = None  # torchvision vgg16 state dict (default: the torch hub cache)
    error_vmax: float = ERROR_VMAX
    mask_iou_threshold: float = 0.1
    # a camera never given as input: *_holdout metrics, per frame (source frame, time) in per_sample.csv, and the
    # prediction's temporal stability in metrics.json (gslrm/session/scoring.py); null: off
    holdout_view: int | None = None
    # the animal's true positions (frame,x,y,z in world units); null: <data.root>/../ground_truth/animal.csv where a
    # `python -m gslrm.data record` recording has it, else the held-out camera's mask centroid is the truth
    truth_csv: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_opacity < 1.0:
            raise ValueError(f"eval.min_opacity: expected a value in [0, 1), not {self.min_opacity}")
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"eval.input_size: expected null or a size of at least 8 pixels, not {self.input_size}")


class Evaluator(L.LightningModule):
    """``trainer.test(Evaluator(...), datamodule)``: writes ``metrics.json``, ``per_sample.csv`` and the pictures."""

    def __init__(
        self,
        model: GSLRM,
        config: EvalConfig,
        num_input_views: int,
        render: RenderConfig,
        holdout_slot: int | None = None,
    ) -> None:
        super().__init__()
        self.model, self.config, self.render_config = model, config, render
        self.num_input_views = num_input_views
        self.holdout_slot = holdout_slot  # where eval.holdout_view sits in the loader's view order
        self.frames: list[int | None] = []  # each sample's source frame (holdout scoring)
        self.fps: float | None = None
        self.truth: dict | None = None
        self.sample_names: list[str] = []
        self.rows: list[dict] = []
        self.skipped_samples = 0
        self.lpips_net, self.lpips_missing = self._build_lpips()
        self.summary: dict = {}
        self.exported: dict[str, dict] = {}  # visualized sample -> Gaussians in it and kept by eval.min_opacity

    def _build_lpips(self):
        from gslrm.losses.lpips import build_lpips
        from gslrm.weights import MissingWeightsError

        if self.config.lpips == "off":
            return None, "disabled (eval.lpips=off)"
        try:
            pretrained, path = self.config.lpips == "pretrained", self.config.lpips_weights_path
            return build_lpips(pretrained, path, config_key="eval.lpips_weights_path"), None
        except MissingWeightsError as error:
            log.warning("LPIPS is not reported: %s", error)
            return None, str(error)

    def on_test_start(self) -> None:
        dataset = self.trainer.datamodule.dataset(self.config.split)
        root = Path(dataset.config.root or ".").resolve()
        self.sample_names = [
            str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else path.name
            for path in dataset.samples
        ]
        if self.holdout_slot is not None:
            self.frames, self.fps, self.truth = session_facts(dataset, self.config.truth_csv)

    @torch.no_grad()
    def test_step(self, batch: dict | None, batch_index: int) -> None:
        if batch is not None:
            self.skipped_samples += int(batch.get("num_skipped", 0))
        if is_empty(batch):
            return
        output, rendered = predict_and_render(
            self.model, batch, self.num_input_views, self.render_config, input_size=self.config.input_size
        )
        pred, alpha, images = rendered.rgb.float().clamp(0, 1), rendered.alpha.float(), batch["image"].float()
        orbit = self.render_orbit(output.gaussians, batch) if "orbit_image" in batch else None
        for b in range(pred.shape[0]):
            index = int(batch["index"][b, 0, 1])
            row = {"index": index, "sample": self.sample_names[index], "views": pred.shape[1]}
            background = batch["bg_color"][b]
            for suffix, views in self.view_sets(pred.shape[1]).items():
                row.update(self.sample_metrics(pred[b, views], alpha[b, views], images[b, views], background, suffix))
            if self.holdout_slot is not None:
                frame = self.frames[index]
                row["frame"] = frame
                row["time"] = frame / self.fps if frame is not None and self.fps else math.nan
                row.update(frame_positions(output.gaussians, batch, b, self.holdout_slot, frame, self.truth))
            if orbit is not None:
                row.update(
                    self.sample_metrics(
                        orbit.rgb[b].float().clamp(0, 1),
                        orbit.alpha[b].float(),
                        batch["orbit_image"][b].float(),
                        background,
                        "_orbit",
                    )
                )
            self.rows.append(row)
            if index < self.config.num_visuals:
                self.write_visuals(row["sample"], images[b], output.gaussians[b], batch, b)

    def render_orbit(self, gaussians, batch: dict):
        """The predicted Gaussians seen from the sample's held-out orbit cameras (at the data's size)."""
        height, width = batch["orbit_image"].shape[-2:]
        return render(
            gaussians,
            batch["orbit_c2w"],
            batch["orbit_fxfycxcy"],
            width,
            height,
            background=batch["bg_color"],
            settings=self.render_config,
            deferred=False,
        )

    def view_sets(self, views: int) -> dict[str, slice]:
        inputs = min(self.num_input_views, views)
        sets = {"": slice(0, views), "_novel": slice(inputs, views), "_input": slice(0, inputs)}
        if self.holdout_slot is not None:
            sets["_holdout"] = slice(self.holdout_slot, self.holdout_slot + 1)
        return sets

    def sample_metrics(self, pred, rendered_alpha, image, background, suffix: str) -> dict[str, float]:
        """Metrics of one sample's views: ``pred`` [v, 3, h, w] (clamped) and its rendered alpha [v, 1, h, w]
        against ``image`` [v, 4, h, w] (RGB on ``background`` and alpha)."""
        if pred.shape[0] == 0:  # e.g. no novel view: every target was an input
            return {f"{name}{suffix}": math.nan for name in METRICS}
        target, alpha = image[:, :3], image[:, 3:4]
        white = background[:, None, None].expand_as(target)

        def psnr(prediction):
            return peak_signal_noise_ratio(prediction, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean()

        metrics = {
            "psnr": psnr(pred),
            "psnr_masked": per_image_masked_psnr(pred, target, alpha).nanmean(),
            "psnr_white": psnr(white),
            "psnr_masked_white": per_image_masked_psnr(white, target, alpha).nanmean(),
            "psnr_black": per_image_psnr(
                on_black(pred, rendered_alpha, background), on_black(target, alpha, background)
            ).mean(),
            "ssim": structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none").mean(),
            "mask_iou": mask_iou(pred, alpha, background.expand(pred.shape[0], 3), self.config.mask_iou_threshold),
            "opacity_iou": opacity_iou(rendered_alpha, alpha),
            "opacity_iou_white": opacity_iou(torch.zeros_like(alpha), alpha),
            "thin_recall": thin_recall(rendered_alpha, alpha),
            "lpips": self.lpips_net(pred * 2 - 1, target * 2 - 1).mean() if self.lpips_net is not None else math.nan,
        }
        return {f"{name}{suffix}": float(value) for name, value in metrics.items()}

    def write_visuals(self, name: str, image, gaussians, batch: dict, b: int) -> None:
        """Panel, inputs and turntable at ``render_size`` on ``eval.background``: the Gaussians rendered again
        through the sample's cameras with the intrinsics scaled (pixel-centre convention: every coordinate scales by
        the same factor); the ground truth, which exists only at the data's size, enlarged bilinearly to match and
        moved onto that background through its alpha. The turntable and the .ply keep the Gaussians of opacity
        above ``eval.min_opacity`` (the .ply also FaceLift's crop box)."""
        folder = Path(self.config.output_dir) / "samples" / name.replace("/", "__")
        inputs, size = self.num_input_views, self.config.render_size
        background = torch.tensor(BACKGROUNDS[self.config.background], device=image.device, dtype=torch.float32)
        factor = size / image.shape[-1]
        large = render(
            gaussians,
            batch["c2w"][b : b + 1],
            batch["fxfycxcy"][b : b + 1] * factor,
            size,
            size,
            background=background[None],
            settings=self.render_config,
            deferred=False,
        )
        pred = large.rgb[0].float().clamp(0, 1)
        gt = torch.nn.functional.interpolate(image.float(), size=(size, size), mode="bilinear", antialias=False)
        gt = recomposite(gt[None], batch["bg_color"][b : b + 1].float(), background[None])[0, :, :3].clamp(0, 1)
        titles = view_titles(image.shape[0], inputs)
        save_png(error_panel(gt, pred, self.config.error_vmax, titles).image, folder / "gt_vs_pred.png")
        save_png(image_row(gt[:inputs]), folder / "input.png")
        kept = prune(gaussians.float(), self.config.min_opacity, crop_box=None)
        total, count = gaussians.means.shape[1], kept.means.shape[1]
        self.exported[name] = {"gaussians": total, "kept": count}
        log.info(
            "%s: %d of %d Gaussians have opacity > eval.min_opacity=%g (the turntable's)",
            name,
            count,
            total,
            self.config.min_opacity,
        )
        turntable = render_turntable(
            kept,
            self.config.turntable_views,
            size,
            elevation_deg=self.config.turntable_elevation,
            background=background,
            settings=self.render_config,
        )
        save_turntable(turntable, folder, "turntable", self.config.video_format, self.config.fps)
        if self.config.save_ply:
            exported = prune(gaussians.float(), self.config.min_opacity)  # and FaceLift's crop box
            self.exported[name]["ply"] = exported.means.shape[1]
            save_ply(folder / "gaussians.ply", exported)

    def on_test_epoch_end(self) -> None:
        rows, skipped, exported = self.rows, self.skipped_samples, self.exported
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (rows, skipped, exported))
            rows = [row for part, _, _ in gathered for row in part]
            skipped = sum(count for _, count, _ in gathered)
            exported = {name: value for _, _, part in gathered for name, value in part.items()}
        rows = sorted({row["index"]: row for row in rows}.values(), key=lambda row: row["index"])  # sampler padding
        if self.holdout_slot is not None:  # a recording: its frames over time
            rows = sorted(rows, key=lambda row: (row["frame"] is None, row["frame"] or 0, row["index"]))
        self.summary = summarize(rows, self.config, self.lpips_missing, skipped)
        if self.holdout_slot is not None:
            self.summary["holdout_view"] = self.config.holdout_view
            self.summary["stability"] = temporal_stability(rows)
        self.summary["export"] = {"min_opacity": self.config.min_opacity, "samples": exported}
        if self.trainer.is_global_zero:
            write_results(rows, self.summary, Path(self.config.output_dir))


def summarize(rows: list[dict], config: EvalConfig, lpips_missing: str | None, skipped: int) -> dict:
    summary: dict = {"checkpoint": config.checkpoint, "split": config.split, "num_samples": len(rows)}
    for suffix in VIEW_SETS:
        for name in METRICS:
            values = [row[key] for row in rows if not math.isnan(row.get(key := f"{name}{suffix}", math.nan))]
            summary[f"{name}{suffix}"] = sum(values) / len(values) if values else None
    summary["lpips_backbone"] = LPIPS_BACKBONE if config.lpips == "pretrained" else "VGG16 with random weights"
    summary["lpips_missing"] = lpips_missing
    summary["skipped_samples"] = skipped
    summary["view_sets"] = {f"<metric>{suffix}": meaning for suffix, meaning in VIEW_SETS.items()}
    return summary


def write_results(rows: list[dict], summary: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if rows:
        with (output_dir / "per_sample.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
            writer.writeheader()
            writer.writerows(rows)
    headline = (
        "psnr",
        "psnr_novel",
        "psnr_masked_novel",
        "psnr_input",
        "psnr_black_novel",
        "opacity_iou_novel",
        "thin_recall_novel",
        "ssim",
        "lpips",
        "mask_iou_novel",
        "psnr_orbit",
        "psnr_masked_orbit",
        "opacity_iou_orbit",
        "thin_recall_orbit",
        "psnr_holdout",
        "psnr_masked_holdout",
        "opacity_iou_holdout",
    )
    shown = ", ".join(f"{k} {summary[k]:.4f}" for k in headline if summary[k] is not None)
    log.info("%s: %d samples: %s (files in %s)", summary["split"], summary["num_samples"], shown, output_dir)


def session_facts(dataset, truth_csv: str | None) -> tuple[list[int | None], float | None, dict | None]:
    """Each sample's source frame, the recording's frame rate and the animal's true positions (or None)."""
    from gslrm.session.frames import recording_fps, source_frame

    root = Path(dataset.config.root or ".")
    frames = [source_frame(sample) for sample in dataset.samples]
    truth_path = Path(truth_csv) if truth_csv else root.resolve().parent / TRUTH_FILE
    if truth_csv and not truth_path.is_file():
        raise ValueError(f"eval.truth_csv: {truth_path}: file not found")
    truth = read_truth(truth_path) if truth_path.is_file() else None
    log.info("the animal's truth: %s", truth_path if truth is not None else "the held-out camera's mask centroid (px)")
    return frames, recording_fps(root), truth
