"""python refine.py ckpt_path=FILE sample=NAME [data=… split=val] — per-scene refinement of a predicted sample.

Predicts the sample's Gaussians with the checkpoint, refines them with the ``loss`` config (the confidence / depth
terms) on its training views, and writes refine_metrics.json (held-out views before/after), the predicted and
refined .ply files, before/after error panels of the held-out views, and a turntable of the refined Gaussians.
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
log = logging.getLogger("gslrm.refine")


def run(cfg: DictConfig) -> dict:
    import lightning as L
    import torch

    from gslrm.config import build
    from gslrm.data.datamodule import collate_views
    from gslrm.depth.priors import check_data_loads_priors
    from gslrm.inference import find_sample, load_for_inference
    from gslrm.refine import refine_sample

    L.seed_everything(cfg.seed)
    loaded = load_for_inference(cfg)
    loss_config = build(cfg.loss)
    check_data_loads_priors(loss_config, loaded.data_config)
    dataset = loaded.dataset(cfg.split)
    sample = collate_views([dataset[find_sample(dataset, cfg.sample)]])
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = loaded.model.to(device)
    sample = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
    return refine_sample(model, sample, loaded.num_input_views, loss_config, build(cfg.refine), loaded.render_config)


@hydra.main(version_base="1.3", config_path="conf", config_name="refine")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    with one_line_errors(ValueError):  # ValueError: an unknown sample, bad holdout views, a foreign checkpoint
        run(cfg)


if __name__ == "__main__":
    hydra_main()
