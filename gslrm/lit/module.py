"""The LightningModule: FaceLift's training step (all target views rendered, inputs included), its step-skipping
rule, and validation metrics as torchmetrics objects (synced across ranks by Lightning, logged by every rank)."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from gslrm.config import coerce, plain
from gslrm.data.datamodule import is_empty
from gslrm.lit.optim import OptimConfig, build_optimizer, restarted_warmup_cosine
from gslrm.lit.step_times import measuring_step_times, step_phase
from gslrm.losses.backgrounds import with_random_backgrounds
from gslrm.losses.base import LossInputs
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.metrics import depth_abs_rel, mask_iou, on_black, opacity_iou, per_image_masked_psnr, per_image_psnr
from gslrm.model.gslrm import GSLRM, ModelConfig, ModelOutput, load_facelift_checkpoint
from gslrm.predict import predict_and_render, renderer
from gslrm.render import RenderConfig, RenderOutput

log = logging.getLogger(__name__)

__all__ = ["GSLRMModule"]

FROZEN_PREFIXES = ("losses.", "val_lpips_net.")  # frozen loss networks: rebuilt from their configs, never saved
# a shard this small is logged whole (the tests check the partition); a bigger one, its first 8 indices
SHARD_INDICES_SHOWN = 64


class GSLRMModule(L.LightningModule):
    def __init__(
        self,
        model: ModelConfig,
        loss: LossConfig,
        optim: OptimConfig,
        render: RenderConfig | None = None,
        num_input_views: int = 4,
        val_lpips: bool = True,
    ) -> None:
        super().__init__()
        # plain dicts come back from a checkpoint's hyper_parameters (load_from_checkpoint)
        model, loss, optim = coerce(ModelConfig, model), coerce(LossConfig, loss), coerce(OptimConfig, optim)
        self.model_config, self.optim_config = model, optim
        self.render_config = coerce(RenderConfig, render) if render is not None else RenderConfig()
        self.num_input_views = num_input_views
        self.save_hyperparameters(
            {
                "model": plain(model),
                "loss": plain(loss),
                "optim": plain(optim),
                "render": plain(self.render_config),
                "num_input_views": num_input_views,
            }
        )
        self.model = GSLRM(model)
        if model.init_from:
            report = load_facelift_checkpoint(self.model, model.init_from)
            log.info(
                "model weights from %s (%d frozen loss-network keys ignored)", model.init_from, len(report["ignored"])
            )
        self.losses = LossComputer(loss)
        self.automatic_optimization = False
        self.register_buffer("attempted_steps", torch.zeros((), dtype=torch.long))  # forward/backward passes
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("accepted_steps", torch.zeros((), dtype=torch.long))
        # samples trained on and samples the data policy skipped (on_error: skip), over the whole run (this rank)
        self.register_buffer("trained_samples", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_samples", torch.zeros((), dtype=torch.long))
        self.register_buffer("grad_norm_mean", torch.zeros(()))
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_psnr_masked = MeanMetric(nan_strategy="ignore")
        self.val_psnr_white = MeanMetric()
        self.val_psnr_masked_white = MeanMetric(nan_strategy="ignore")
        self.val_mask_iou = MeanMetric()
        self.val_opacity_iou = MeanMetric()
        # on black through the rendered alpha: fog in empty space is error there (all views, novel, input)
        self.val_psnr_black = torch.nn.ModuleDict({view_set: MeanMetric() for view_set in ("all", "novel", "input")})
        # the learning curves' metrics by view set (gslrm/curves.py): novel = targets that were not inputs
        self.val_view_sets = torch.nn.ModuleDict(
            {
                f"{name}_{view_set}": MeanMetric(nan_strategy="ignore")
                for name in ("psnr", "psnr_masked", "opacity_iou")
                for view_set in ("novel", "input")
            }
        )
        self.val_depth_abs_rel = MeanMetric()  # when the data has depth (data.load_depth=true)
        self.val_lpips = MeanMetric()
        self.val_lpips_net, self.val_lpips_missing = None, None
        if val_lpips:
            from gslrm.losses.lpips import build_lpips
            from gslrm.weights import MissingWeightsError

            try:
                self.val_lpips_net = build_lpips(pretrained_backbone=True)
            except MissingWeightsError as error:
                self.val_lpips_missing = str(error)
                log.warning("val/lpips is not reported: %s", error)

    # -- forward -----------------------------------------------------------------------------------------------
    def predict_batch(
        self, batch: dict, clip_xyz: bool | None = None, background: Tensor | None = None
    ) -> tuple[ModelOutput, RenderOutput]:
        """Gaussians from the first ``num_input_views`` views, rendered into every view of the batch."""
        return predict_and_render(
            self.model,
            batch,
            self.num_input_views,
            self.render_config,
            training=self.training,
            clip_xyz=clip_xyz,
            background=background,
        )

    def loss_inputs(self, batch: dict, output: ModelOutput, rendered: RenderOutput) -> LossInputs:
        image = batch["image"]
        render_fn = renderer(output.gaussians, batch, self.render_config)  # the pseudo-view depth term's cameras
        return LossInputs(
            render=rendered.rgb,
            target=image[:, :, :3],
            mask=image[:, :, 3:4],
            background=batch["bg_color"],
            gaussians=output.gaussians,
            pixel_means=output.pixel_means,
            ray_o=output.ray_o,
            ray_d=output.ray_d,
            input_mask=image[:, : self.num_input_views, 3:4],
            depth=rendered.depth,
            alpha=rendered.alpha,
            batch=batch,
            render_fn=render_fn,
            render_settings=self.render_config,
        )

    # -- training ----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.trainer.global_step > 0:
            log.info("resumed at step %d (%d samples trained)", self.trainer.global_step, int(self.trained_samples))
        if self.trainer.world_size > 1:  # where each rank runs, as the cluster gave it: for multi-node debugging
            import os
            import socket

            log.info(
                "rank %d of %d on %s: node rank %d, local rank %d, master %s:%s",
                self.trainer.global_rank,
                self.trainer.world_size,
                socket.gethostname(),
                self.trainer.node_rank,
                self.trainer.local_rank,
                os.environ.get("MASTER_ADDR", "?"),
                os.environ.get("MASTER_PORT", "?"),
            )

    def on_train_epoch_start(self) -> None:
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if self.trainer.world_size > 1 and sampler is not None:  # each rank's shard of this epoch
            indices = list(iter(sampler))
            shown = indices if len(indices) <= SHARD_INDICES_SHOWN else [*indices[:8], "..."]
            log.info(
                "epoch %d: rank %d of %d trains on %d samples per epoch: %s",
                self.current_epoch,
                self.trainer.global_rank,
                self.trainer.world_size,
                len(indices),
                shown,
            )

    def training_step(self, batch: dict | None, batch_index: int) -> dict | None:
        """One optimizer step (or a counted skip). Returns what the callbacks read (``on_train_batch_end``'s
        ``outputs``): the step's inputs, targets, renders and Gaussians, detached, and when the step ended."""
        if batch is not None:
            self.skipped_samples += int(batch.get("num_skipped", 0))
        if is_empty(batch):  # every sample of the batch was skipped by the data policy (on_error: skip)
            return
        # FaceLift schedules its warmups by forward/backward passes, which go on when a step is skipped;
        # Lightning's global_step counts the optimizer steps taken
        step = int(self.attempted_steps)
        self.attempted_steps += 1
        clip_xyz = None if self.losses.clip_xyz_allowed(step) else False
        supervised = with_random_backgrounds(batch) if self.losses.config.background == "random" else batch
        times = measuring_step_times(self._trainer)  # callbacks.step_times: None unless measuring this step
        with step_phase(times, "render_forward"):  # the model's own forward is taken out of it (step_times)
            output, rendered = self.predict_batch(batch, clip_xyz=clip_xyz, background=supervised["bg_color"])
        with step_phase(times, "loss"):
            terms = self.losses(self.loss_inputs(supervised, output, rendered), step)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        loss = terms["loss"]
        grad_norm = torch.tensor(float("nan"), device=loss.device)
        if torch.isfinite(loss):
            if times is not None:
                times.watch_gaussians(output.gaussians)
            with times.backward() if times is not None else nullcontext():
                self.manual_backward(loss)
        with step_phase(times, "optimizer"):
            if torch.isfinite(loss):
                parameters = [p for p in self.model.parameters() if p.grad is not None]
                for p in parameters:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=1e-3, neginf=-1e-3)
                grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.optim_config.grad_clip)
            if self.should_skip(loss, grad_norm):
                self.skipped_steps += 1
            else:
                optimizer.step()
                self.record_grad_norm(grad_norm)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()  # FaceLift steps the schedule after every attempt, skipped or not

        batch_size = batch["image"].shape[0]
        self.trained_samples += batch_size
        with step_phase(times, "logging"):
            self.log_dict(
                {f"train/{name}": value.detach().float() for name, value in terms.items()}, batch_size=batch_size
            )
            self.log_dict(
                {
                    "metrics/lr": optimizer.param_groups[0]["lr"],
                    "metrics/grad_norm": grad_norm.float(),
                    "metrics/skipped_steps": self.skipped_steps.float(),
                    "metrics/iter": float(step),
                    "metrics/param_update_step": float(self.global_step),
                    "metrics/skipped_samples": self.skipped_samples.float(),
                    "metrics/trained_samples": self.trained_samples.float(),
                    "metrics/image_size": float(batch["image"].shape[-1]),  # data.image_size_schedule's
                },
                batch_size=batch_size,
            )
            if loss.is_cuda:  # the memory a step really needs (README memory guidance)
                self.log(
                    "metrics/peak_memory_gib",
                    torch.cuda.max_memory_allocated(loss.device) / 2**30,
                    batch_size=batch_size,
                )
        return {  # detached: holding the graph would keep a whole step's activations alive
            "batch": batch,  # as the model saw its inputs
            "targets": supervised["image"][:, :, :3],  # what the renders were compared with (loss.background)
            "rendered": RenderOutput(rendered.rgb.detach(), rendered.depth.detach(), rendered.alpha.detach()),
            "gaussians": output.gaussians.detach(),
            "step": step,  # forward/backward passes before this one
            "ended_at": time.perf_counter(),
        }

    def should_skip(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Skip (and count) a step whose loss or gradient norm is not finite, or whose norm exceeds
        ``allowed_gradnorm_factor`` x the running mean of accepted steps' norms (once that mean has settled)."""
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            return True
        config = self.optim_config
        settled = int(self.accepted_steps) >= config.skip_warmup_steps
        return bool(settled and grad_norm > config.allowed_gradnorm_factor * self.grad_norm_mean)

    def record_grad_norm(self, grad_norm: torch.Tensor) -> None:
        decay = self.optim_config.gradnorm_ema
        if int(self.accepted_steps) == 0:
            self.grad_norm_mean.fill_(float(grad_norm))
        else:
            self.grad_norm_mean.mul_(decay).add_((1 - decay) * grad_norm.detach().to(self.grad_norm_mean))
        self.accepted_steps += 1

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optim_config)
        total = self.optim_config.total_steps or self.trainer.max_steps
        if total is None or total <= 0:
            raise ValueError("optim.total_steps: set it, or trainer.max_steps, for the cosine schedule")
        config = self.optim_config
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: restarted_warmup_cosine(
                step, config.warmup_steps, total, tuple(config.restart_at), config.restart_peak
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation --------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict | None, batch_index: int) -> dict | None:
        if is_empty(batch):
            return None
        output, rendered = self.predict_batch(batch)
        target, alpha = batch["image"][:, :, :3], batch["image"][:, :, 3:4]
        render_flat, target_flat, alpha_flat = (t.flatten(0, 1).float() for t in (rendered.rgb, target, alpha))
        render_flat = render_flat.clamp(0, 1)
        white = torch.ones_like(target_flat)
        self.val_psnr(render_flat, target_flat)
        self.val_ssim(render_flat, target_flat)
        self.val_psnr_masked(per_image_masked_psnr(render_flat, target_flat, alpha_flat))
        self.val_psnr_white(per_image_psnr(white, target_flat))
        self.val_psnr_masked_white(per_image_masked_psnr(white, target_flat, alpha_flat))
        background = batch["bg_color"][:, None].expand(-1, target.shape[1], -1)
        self.val_mask_iou(mask_iou(rendered.rgb, alpha, background, self.losses.config.mask_iou_threshold))
        self.val_opacity_iou(opacity_iou(rendered.alpha, alpha))
        black_psnr = per_image_psnr(
            on_black(rendered.rgb.clamp(0, 1), rendered.alpha, background).flatten(0, 1).float(),
            on_black(target, alpha, background).flatten(0, 1).float(),
        ).view(target.shape[:2])  # [b, v]
        inputs = self.num_input_views
        for view_set, views in (("all", slice(None)), ("novel", slice(inputs, None)), ("input", slice(0, inputs))):
            if black_psnr[:, views].numel():
                self.val_psnr_black[view_set](black_psnr[:, views].flatten())
        views_psnr = per_image_psnr(render_flat, target_flat).view(target.shape[:2])
        views_masked = per_image_masked_psnr(render_flat, target_flat, alpha_flat).view(target.shape[:2])
        for view_set, views in (("novel", slice(inputs, None)), ("input", slice(0, inputs))):
            if not views_psnr[:, views].numel():
                continue
            self.val_view_sets[f"psnr_{view_set}"](views_psnr[:, views].flatten())
            self.val_view_sets[f"psnr_masked_{view_set}"](views_masked[:, views].flatten())
            # per sample, pooled over its views of the set, as eval.py (pooling the batch weights big silhouettes:
            # 0.585 against eval.py's 0.50 on make train's run)
            ious = torch.stack([opacity_iou(rendered.alpha[b, views], alpha[b, views]) for b in range(len(alpha))])
            self.val_view_sets[f"opacity_iou_{view_set}"](ious)
        metrics = {
            "val/psnr": self.val_psnr,
            "val/ssim": self.val_ssim,
            "val/psnr_masked": self.val_psnr_masked,
            "val/psnr_white": self.val_psnr_white,
            "val/psnr_masked_white": self.val_psnr_masked_white,
            "val/mask_iou": self.val_mask_iou,
            "val/opacity_iou": self.val_opacity_iou,
            "val/psnr_black": self.val_psnr_black["all"],
        }
        if target.shape[1] > inputs:
            metrics["val/psnr_black_novel"] = self.val_psnr_black["novel"]
        metrics["val/psnr_black_input"] = self.val_psnr_black["input"]
        for key, metric in self.val_view_sets.items():
            if metric.update_count:  # a set without views (no novel view) is not logged
                metrics[f"val/{key}"] = metric
        if "depth" in batch:
            self.val_depth_abs_rel(depth_abs_rel(rendered.depth, batch["depth"], alpha))
            metrics["val/depth_abs_rel"] = self.val_depth_abs_rel
        if self.val_lpips_net is not None:
            self.val_lpips(self.val_lpips_net(render_flat * 2 - 1, target_flat * 2 - 1).flatten())
            metrics["val/lpips"] = self.val_lpips
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=render_flat.shape[0])
        return {"rendered": rendered, "gaussians": output.gaussians}  # the panels' and the live viewer's

    # -- checkpoints: frozen loss networks stay out ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith(FROZEN_PREFIXES):
                state[key] = value
