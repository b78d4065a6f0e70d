"""python predict.py ckpt_path=FILE data.root=/data/mouse [split=all frames=START:STOP:STEP] — a whole recording in 3D.

Every frame of the split, in source-frame order, through the checkpoint's model into a sequence store in the rig's own
world frame and units (gslrm/session/store.py; docs/predict.md). Rerunning the same command continues where it
stopped; predict.shard=i predict.num_shards=n (or a multirun over shards with hydra/launcher=slurm) splits a session
over jobs writing one store; trainer=ddp spreads a job's frames over its GPUs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("GSLRM_ROOT", str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "osmesa")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from gslrm.schemas import register_configs  # noqa: E402

register_configs()
log = logging.getLogger("gslrm.predict")

# the trainer keys a prediction uses (the trainer group's other keys are training's)
TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def predict(cfg: DictConfig) -> dict:
    """Run (or continue) the prediction ``cfg`` describes; returns a summary (frames written, skipped, complete)."""
    import shutil
    import warnings
    from dataclasses import replace

    import lightning as L
    import torch

    from gslrm import slurm
    from gslrm.config import build
    from gslrm.inference import CheckpointMismatchError, load_for_inference
    from gslrm.lit.requeue import JobRequeued
    from gslrm.session.frames import FrameRange, select_frames
    from gslrm.session.predictor import Plan, ProgressLog, SequenceDataModule, SequencePredictor, SequenceWriter
    from gslrm.session.store import SequenceStore, checkpoint_sha256

    L.seed_everything(cfg.seed, workers=True)
    config = build(cfg.predict)
    loaded = load_for_inference(cfg)
    data_config = loaded.data_config
    inputs = loaded.num_input_views
    if config.input_views is not None:
        bad = [v for v in config.input_views if not 0 <= v < data_config.num_views]
        if bad or len(set(config.input_views)) != len(config.input_views):
            raise CheckpointMismatchError(
                f"predict.input_views: {list(config.input_views)}: camera indices must be distinct and in "
                f"0..{data_config.num_views - 1} (data.num_views={data_config.num_views})"
            )
        inputs = len(config.input_views)
        if inputs != loaded.num_input_views:
            log.info("%d input views; the checkpoint learnt with %d", inputs, loaded.num_input_views)
        data_config = replace(data_config, input_views=list(config.input_views), num_input_views=inputs)
    data_config = replace(data_config, load_orbit=False, load_depth=False, random_view_selection=False)
    loaded.datamodule()  # the generated default data is made on first use
    frames_range = FrameRange.parse(cfg.frames)
    frames = select_frames(data_config, cfg.split, frames_range, config.fps)
    digest = checkpoint_sha256(loaded.checkpoint)
    identity = {
        "checkpoint_sha256": digest,
        "data_root": str(Path(data_config.root).resolve()) if data_config.root else None,
        "image_size": data_config.image_size,
        "input_views": data_config.input_views or list(range(inputs)),
        "normalization": OmegaConf.to_container(cfg.data.normalization, resolve=True),
        "min_opacity": config.min_opacity,
        "encoding": str(config.encoding),
        "frames_per_chunk": config.frames_per_chunk,
        "split": cfg.split,
        "frames": cfg.frames,
    }
    out = Path(config.out) if config.out else default_out(cfg, digest)
    store = SequenceStore(out)
    if config.overwrite and out.exists():
        log.warning("predict.overwrite=true: replacing %s", out)
        shutil.rmtree(out)
    capacity = loaded.model.config.num_token_gaussians + inputs * data_config.image_size**2
    resolved = OmegaConf.to_container(cfg, resolve=True)
    store.open_or_create(frames, capacity, config.frames_per_chunk, identity, resolved)
    log.info("store: %s (%d frames, %d Gaussians at most per frame)", out, len(frames), capacity)

    plan = Plan(frames, config.frames_per_chunk, config.shard, config.num_shards)
    datamodule = SequenceDataModule(data_config, plan, store, config)
    writer = SequenceWriter(store, plan, out / "ply" if config.ply else None)
    progress = ProgressLog(plan, config.progress_every_s)
    trainer = L.Trainer(
        **{key: cfg.trainer[key] for key in TRAINER_KEYS if key in cfg.trainer},
        default_root_dir=cfg.paths.output_dir,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,  # ProgressLog's lines: readable in a SLURM log
        plugins=slurm_plugins(),
        use_distributed_sampler=False,  # each worker owns whole chunks (Plan)
        callbacks=[writer, progress],
    )
    module = SequencePredictor(loaded.model, inputs, config)
    # a worker whose chunks are all done gets an empty loader on purpose (a rerun, or more workers than chunks)
    warnings.filterwarnings("ignore", message="Total length of `DataLoader` across ranks is zero")
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    trainer.strategy.barrier()
    # frames of this job still to do, over its ranks (a signal after the last frame leaves nothing to requeue for)
    left = float(trainer.strategy.reduce(torch.tensor(float(len(plan.positions) - writer.written)), reduce_op="sum"))
    if datamodule.stop.requested and slurm.job_id() is not None and left > 0:
        if trainer.is_global_zero:
            log.warning("SLURM job %s requeued: the next attempt continues %s", slurm.job_id(), out)
            slurm.requeue(slurm.job_id())
        raise JobRequeued(0)
    complete = trainer.is_global_zero and store.finalize()
    summary = {"store": str(out), "written": writer.written, "skipped": writer.skipped, "complete": complete}
    # this worker's predict loop and its stages in seconds (reading the views: the loop's time in none of them)
    summary["seconds"] = {"loop": progress.elapsed, **module.seconds, **writer.seconds}
    if complete and config.video:
        from gslrm.session.video import write_video

        summary["video"] = str(write_video(store, [frame.sample for frame in frames], out / "video.mp4", config))
    if complete:
        manifest = store.manifest()
        log.info(
            "sequence complete: %s (%d frames, %d skipped; table %s)",
            out,
            manifest["frames_done"],
            manifest["frames_skipped"],
            out / "frames.csv",
        )
    elif trainer.is_global_zero:
        log.info("%s: %d frames written by this run; other shards still have frames to do", out, writer.written)
    return summary


def slurm_plugins() -> list:
    """Under SLURM, Lightning takes the ranks from SLURM, with its auto-requeue off (SIGUSR2 is ours)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def default_out(cfg: DictConfig, digest: str) -> Path:
    """One folder per checkpoint and selection, so that the same command finds its store again."""
    frames = f"_{cfg.frames.replace(':', '-')}" if cfg.frames else ""
    return Path(cfg.paths.log_dir) / "predict" / "sequences" / f"{digest[:12]}_{cfg.split}{frames}"


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    with one_line_errors(ValueError):  # a checkpoint or store that does not fit this data, a bad frame range
        predict(cfg)


if __name__ == "__main__":
    hydra_main()
