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

from gslrm.config import register_resolvers  # noqa: E402

register_resolvers()
log = logging.getLogger("gslrm.eval")


def evaluate(cfg: DictConfig) -> dict:
    import lightning as L
    from hydra.utils import instantiate

    from gslrm.config import build
    from gslrm.data.datamodule import MouseDataModule
    from gslrm.evaluate import Evaluator, load_model
    from gslrm.lit.launch import install_multirun_safe_ddp_launch
    from gslrm.runs import resolve_checkpoint

    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.train_task)
    data_config = build(cfg.data)
    model, render_config = load_model(ckpt_path, build(cfg.model) if cfg.get("model") else None)
    config = build(cfg.eval)
    config.checkpoint = str(ckpt_path)
    data_config.load_orbit = {"true": True, "false": False}.get(str(config.orbit).lower(), "auto")
    evaluator = Evaluator(model, config, data_config.num_input_views, render_config or build(cfg.render))
    install_multirun_safe_ddp_launch()
    trainer = instantiate(cfg.trainer)
    trainer.test(evaluator, datamodule=MouseDataModule(data_config, test_split=cfg.split), verbose=False)
    return evaluator.summary


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    with one_line_errors(ValueError):  # ValueError: a checkpoint that is not a GS-LRM's
        evaluate(cfg)


if __name__ == "__main__":
    hydra_main()
