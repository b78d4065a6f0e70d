"""python eval.py ckpt_path=FILE [data=… split=val|test] — score a checkpoint (gslrm's, or FaceLift's with model=base).

Writes into the run directory: metrics.json (means over the split, all target views and novel views apart),
per_sample.csv, and for the first eval.num_visuals samples samples/<name>/{gt_vs_pred.png, input.png,
turntable.mp4|gif, turntable_preview.png, gaussians.ply (eval.save_ply=true)}.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("GSLRM_ROOT", str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "osmesa")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gslrm.schemas import register_configs  # noqa: E402

register_configs()
log = logging.getLogger("gslrm.eval")


def evaluate(cfg: DictConfig) -> dict:
    from dataclasses import replace

    import lightning as L
    from hydra.utils import instantiate

    from gslrm.config import build
    from gslrm.evaluate import Evaluator
    from gslrm.inference import load_for_inference
    from gslrm.lit.launch import install_multirun_safe_ddp_launch
    from gslrm.session.scoring import holdout_inputs

    L.seed_everything(cfg.seed, workers=True)
    loaded = load_for_inference(cfg)
    config = replace(build(cfg.eval), checkpoint=loaded.checkpoint)
    loaded.data_config.load_orbit = config.orbit  # null: when the split's first sample has orbit views
    holdout_slot = None
    if config.holdout_view is not None:  # a camera never given as input; the others feed the model
        data = loaded.data_config
        order = list(data.view_order) if data.view_order is not None else list(range(data.num_views))
        data.input_views, holdout_slot = holdout_inputs(order, loaded.num_input_views, config.holdout_view)
        data.random_view_selection = False
        log.info("eval.holdout_view=%d: inputs %s", config.holdout_view, data.input_views)
    evaluator = Evaluator(loaded.model, config, loaded.num_input_views, loaded.render_config, holdout_slot)
    install_multirun_safe_ddp_launch()
    trainer = instantiate(cfg.trainer)
    datamodule = loaded.datamodule(test_split=cfg.split)
    # each sample's similarity back to the rig's frame: the predicted centroid against the true one, in world units
    datamodule.dataset(cfg.split).with_world_frame = holdout_slot is not None
    trainer.test(evaluator, datamodule=datamodule, verbose=False)
    return evaluator.summary


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    with one_line_errors(ValueError):  # ValueError: a checkpoint that is not a GS-LRM's, or not for this data
        evaluate(cfg)


if __name__ == "__main__":
    hydra_main()
