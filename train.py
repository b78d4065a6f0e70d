"""python train.py [group=option ...] [key=value ...] — gslrm's training entry point (Hydra + Lightning).

python train.py                                   # tiny model, generated rodent data, this machine
python train.py loss=facelift data=mouse data.root=/data/mouse
python train.py -m loss.ssim.weight=0,0.5,1       # a sweep: one run directory and wandb run per job
python train.py ckpt_path=last                    # resume the newest run (optimizer, schedule, step, wandb run)
python train.py model.init_from=ckpt.pt           # weights only (FaceLift checkpoints included)
"""

from __future__ import annotations

import logging
import math
import os
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("GSLRM_ROOT", str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "osmesa")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from gslrm.schemas import register_configs  # noqa: E402

register_configs()
log = logging.getLogger("gslrm.train")
# our checkpoints are meant to hold the state after the optimizer step (that is what resuming needs)
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gslrm.runs import reason, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return train(cfg)
    environment = dict(os.environ)  # DDP's launcher sets LOCAL_RANK, WORLD_SIZE, MASTER_PORT...: undone per job
    try:  # a failing sweep job is recorded and the sweep goes on
        return train(cfg)
    except Exception as error:  # the reason first: a person reads FAILED.txt's first line, not a traceback
        (Path(cfg.paths.output_dir) / "FAILED.txt").write_text(f"{reason(error)}\n\n{traceback.format_exc()}")
        log.error("job %s failed: %s; the sweep continues", HydraConfig.get().job.num, reason(error))
        return math.nan
    finally:
        _end_job()
        os.environ.clear()
        os.environ.update(environment)  # else the next job believes its ranks were started externally and waits


def train(cfg: DictConfig) -> float:
    import lightning as L
    from hydra.utils import instantiate

    from gslrm.config import build
    from gslrm.data.datamodule import ViewDataModule
    from gslrm.depth.priors import DepthPriors, check_data_loads_priors
    from gslrm.lit.launch import install_multirun_safe_ddp_launch
    from gslrm.lit.module import GSLRMModule
    from gslrm.lit.requeue import RequeueOnSignal, resume_checkpoint
    from gslrm.runs import resolve_checkpoint, wandb_id_for

    L.seed_everything(cfg.seed, workers=True)
    data_config, loss_config = build(cfg.data), build(cfg.loss)
    check_data_loads_priors(loss_config, data_config)
    module = GSLRMModule(
        model=build(cfg.model),
        loss=loss_config,
        optim=build(cfg.optim),
        render=build(cfg.render),
        num_input_views=data_config.num_input_views,
        val_lpips=cfg.val_lpips,
    )
    # the depth priors the loss reads are data: attached to training batches by the data module (one MiDaS in
    # memory when the pseudo-view term has loaded it already)
    priors = DepthPriors.for_loss(loss_config, midas_estimator=module.losses.image_estimator)
    datamodule = ViewDataModule(data_config, priors=priors)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name)
    if ckpt_path is None:  # a SLURM job restarted after a requeue, preemption or node failure continues its run
        ckpt_path = resume_checkpoint(Path(cfg.paths.output_dir) / "checkpoints")
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if name == "wandb" and ckpt_path and node.get("id") is None:
            node = OmegaConf.merge(node, {"id": wandb_id_for(ckpt_path)})
        loggers.append(instantiate(node))
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    install_multirun_safe_ddp_launch()
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=_plugins())
    if cfg.validate_before_training and ckpt_path is None and not trainer.fast_dev_run:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # the starting point, logged at step 0
        _report(trainer, "start")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    for callback in callbacks:
        if isinstance(callback, RequeueOnSignal):
            callback.after_fit(trainer)  # SIGUSR2 under SLURM: requeued -> JobRequeued (SystemExit) on every rank
    if _last_steps_unvalidated(trainer, cfg.trainer.get("val_check_interval")):
        # validation runs every val_every steps, so the steps after the last multiple (e.g. the last 200 of 4200
        # steps, the end of the cosine) would be missing from curve.csv and from the "end" line: validate the final
        # weights, which are what last.ckpt holds and eval.py scores
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return _report(trainer, "end").get("val/psnr", math.nan)


def _last_steps_unvalidated(trainer, interval) -> bool:
    """A run that validated every ``interval`` steps during training (not one that set it beyond its steps, nor a
    fraction of an epoch) and stopped between two validations at its max_steps (not interrupted)."""
    step = trainer.global_step
    if trainer.fast_dev_run or trainer.interrupted or not isinstance(interval, int) or step < interval:
        return False
    return step % interval != 0


def _plugins() -> list:
    """Atomic checkpoint writes everywhere; under SLURM, Lightning takes the ranks from SLURM."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from gslrm.lit.checkpoint_io import AtomicCheckpointIO

    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        # auto_requeue off: callbacks.requeue (gslrm.lit.requeue) owns SIGUSR2, see its docstring for why
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _report(trainer, when: str) -> dict[str, float]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    shown = [
        k
        for k in ("val/psnr", "val/psnr_masked", "val/psnr_white", "val/psnr_masked_white", "val/ssim")
        if k in metrics
    ]
    if shown:
        log.info("%s (step %d): %s", when, trainer.global_step, ", ".join(f"{k} {metrics[k]:.2f}" for k in shown))
    return metrics


def _end_job() -> None:
    """Close what a job leaves behind so the next sweep job starts clean: its wandb run, and its DDP process group
    (its other ranks are gone; a second job reusing the group fails with 'connection closed by peer')."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as error:  # noqa: BLE001 - closing must never hide the job's own outcome
        # one line: a requeued SLURM job is being stopped (its wandb service may be gone already) and the offline
        # run's files are complete; a traceback here read as a crash of the attempt
        from gslrm.runs import reason

        log.warning("could not close the wandb run (%s: %s)", type(error).__name__, reason(error))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    from gslrm.runs import one_line_errors

    try:
        with one_line_errors():
            return main(cfg)
    except RuntimeError as error:
        _end_on_lost_peer(error, cfg)
        raise
    finally:
        _end_job()


def _end_on_lost_peer(error: RuntimeError, cfg: DictConfig) -> None:
    """A rank whose peer died (its process or its node killed) gets the collective's error deep inside backward():
    one line instead of the traceback, saying what happens next. Returns for any other error."""
    from gslrm.runs import lost_peer

    cause = lost_peer(error)
    if cause is None:
        return
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    log.error(
        "lost contact with another rank (%s): a process or a node of this job died. The run continues from its "
        "newest readable checkpoint when SLURM restarts the job (a node failure, scontrol requeue), or with "
        "ckpt_path=last or ckpt_path=%s/<file>",
        cause,
        checkpoints,
    )
    raise SystemExit(1) from None


if __name__ == "__main__":
    hydra_main()
