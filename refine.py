"""python refine.py ckpt_path=FILE sample=NAME [data=… split=val] — per-scene refinement of a predicted sample.

Predicts the sample's Gaussians with the checkpoint, refines them with the ``loss`` config (the seed-000 confidence /
depth pipeline) on its training views, and writes refine_metrics.json (held-out views before/after), the predicted
and refined .ply files, before/after error panels of the held-out views, and a turntable of the refined Gaussians.
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
log = logging.getLogger("gslrm.refine")


def find_sample(dataset, name: str) -> int:
    """Index of ``name`` (as listed in the split file, its directory name, or an index) in ``dataset``."""
    root = Path(dataset.config.root or ".").resolve()
    for index, path in enumerate(dataset.samples):
        resolved = path.resolve()
        relative = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else None
        if name in (relative, path.name, str(path)):
            return index
    if name.isdigit() and int(name) < len(dataset):
        return int(name)
    listed = ", ".join(p.name for p in dataset.samples[:5])
    raise ValueError(f"sample: {name!r} is not in split '{dataset.split}' ({len(dataset)} samples: {listed}, ...)")


def run(cfg: DictConfig) -> dict:
    import lightning as L
    import torch

    from gslrm.config import build
    from gslrm.data.datamodule import MouseDataModule, collate_views
    from gslrm.depth.priors import check_data_loads_priors
    from gslrm.evaluate import load_model
    from gslrm.refine import refine_sample
    from gslrm.runs import resolve_checkpoint

    L.seed_everything(cfg.seed)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.train_task)
    data_config, loss_config = build(cfg.data), build(cfg.loss)
    check_data_loads_priors(loss_config, data_config)
    datamodule = MouseDataModule(data_config)
    datamodule.prepare_data()  # the rodent default is generated on first use
    dataset = datamodule.dataset(cfg.split)
    sample = collate_views([dataset[find_sample(dataset, str(cfg.sample))]])
    model, render_config = load_model(ckpt_path, build(cfg.model) if cfg.get("model") else None)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    sample = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
    settings = render_config or build(cfg.render)
    return refine_sample(model, sample, data_config.num_input_views, loss_config, build(cfg.refine), settings)


@hydra.main(version_base="1.3", config_path="conf", config_name="refine")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors, save_config_tree

    save_config_tree(cfg, Path(cfg.paths.output_dir))
    with one_line_errors(ValueError):  # ValueError: an unknown sample, bad holdout views, a foreign checkpoint
        run(cfg)


if __name__ == "__main__":
    hydra_main()
