"""Training pictures for wandb (or PNGs): supervision grids, input strips, turntables and validation error panels.

A callback, so the LightningModule never calls wandb. Keys (one wandb section per prefix, set with define_metric):
``images/train/supervision_{i}`` (GT row over render row, one column per target view), ``images/train/input_{i}``,
``images/train/turntable_{i}``, ``images/val/gt_vs_pred_{i}`` (the colorbar error panel). Without a wandb logger
(``logger=csv``, ``logger=none``, or the dummy logger ``fast_dev_run`` swaps in) the same images are written to
``<output_dir>/images/<split>/<name>/step_XXXXXXX.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from gslrm.turntable import render_turntable
from gslrm.viz import ERROR_VMAX, enlarged, error_panel, image_row, image_rows, save_png, view_titles

log = logging.getLogger(__name__)

__all__ = ["TrainingVisuals", "ImageSink", "SECTIONS"]

SECTIONS = ("images", "metrics", "train", "val")


class ImageSink:
    """Where images go: the wandb run if the trainer has a wandb logger, else PNG files under ``output_dir``."""

    def __init__(self, trainer: L.Trainer, output_dir: Path) -> None:
        from lightning.pytorch.loggers import WandbLogger

        self.output_dir = output_dir
        self.wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if self.wandb is not None:
            define_sections(self.wandb.experiment)

    def log(self, key: str, image: np.ndarray, step: int, caption: str | None = None) -> None:
        if self.wandb is not None:
            self.wandb.log_image(key=key, images=[image], step=step, caption=[caption] if caption else None)
        else:
            save_png(image, self.output_dir / key / f"step_{step:07d}.png")


def define_sections(experiment) -> None:
    """Group the wandb UI into images / metrics / train / val, all against Lightning's trainer/global_step."""
    for section in SECTIONS:
        experiment.define_metric(f"{section}/*", step_metric="trainer/global_step")
    experiment.define_metric("val/psnr", step_metric="trainer/global_step", summary="max")
    experiment.define_metric("val/lpips", step_metric="trainer/global_step", summary="min")


class TrainingVisuals(Callback):
    def __init__(
        self,
        output_dir: str,
        vis_every: int = 250,
        max_samples: int = 2,
        turntable_views: int = 8,
        turntable_elevation: float = 20.0,
        error_vmax: float = ERROR_VMAX,
        min_size: int = 128,
    ) -> None:
        if vis_every <= 0:
            raise ValueError(f"callbacks.visuals.vis_every: must be positive, got {vis_every}")
        self.output_dir = Path(output_dir)
        self.vis_every = vis_every
        self.max_samples = max_samples
        self.turntable_views = turntable_views
        self.turntable_elevation = turntable_elevation
        self.error_vmax = error_vmax
        self.min_size = min_size  # pixels per view at least (a 32 px strip is unreadable in wandb)
        self.sink: ImageSink | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.sink is None:  # trainer.validate then trainer.fit: one sink
            self.sink = ImageSink(trainer, self.output_dir)

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_index: int) -> None:
        last = outputs  # the training step's (None: a batch the data policy skipped whole)
        if self.sink is None or not last or last["step"] % self.vis_every:
            return
        batch, rendered, gaussians = last["batch"], last["rendered"], last["gaussians"]
        step, inputs = trainer.global_step, module.num_input_views
        images = batch["image"][:, :, :3]
        for i in range(min(self.max_samples, images.shape[0])):
            caption = f"sample {int(batch['index'][i, 0, 1])}, pass {last['step']}"
            supervision = image_rows(last["targets"][i], rendered.rgb[i], min_size=self.min_size)
            self.sink.log(f"images/train/supervision_{i}", supervision, step, caption)
            self.sink.log(f"images/train/input_{i}", image_row(images[i, :inputs], self.min_size), step, caption)
            turntable = render_turntable(  # the Gaussians do not depend on resolution: render the orbit large
                gaussians[i],
                self.turntable_views,
                max(images.shape[-1], self.min_size),
                elevation_deg=self.turntable_elevation,
                background=batch["bg_color"][i],
                settings=module.render_config,
            )
            self.sink.log(f"images/train/turntable_{i}", image_row(turntable), step, caption)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_index: int, dataloader_idx=0) -> None:
        if self.sink is None or trainer.sanity_checking or batch_index != 0 or not outputs:
            return
        rendered, images = outputs["rendered"], batch["image"][:, :, :3]
        inputs = module.num_input_views
        titles = view_titles(images.shape[1], inputs)
        for i in range(min(self.max_samples, images.shape[0])):
            gt, pred = enlarged(images[i], self.min_size), enlarged(rendered.rgb[i], self.min_size)
            panel = error_panel(gt, pred, vmax=self.error_vmax, titles=titles)
            caption = f"sample {int(batch['index'][i, 0, 1])}: PSNR {panel.psnr:.2f} dB"
            self.sink.log(f"images/val/gt_vs_pred_{i}", panel.image, trainer.global_step, caption)
