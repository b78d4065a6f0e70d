"""python train.py [overrides] — gslrm's training entry point (Hydra)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("GSLRM_ROOT", str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "osmesa")

log = logging.getLogger("gslrm.train")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.utils import instantiate

    from gslrm.data.datamodule import MouseDataModule

    data_config = instantiate(cfg.data, _convert_="all")
    datamodule = MouseDataModule(data_config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # Training lands with the model (issue 3) and the trainer (issue 4); until then this is a data smoke pass.
    start, count = time.perf_counter(), 0
    for batch in datamodule.train_dataloader():
        count += batch["image"].shape[0]
    rate = count / (time.perf_counter() - start)
    log.info("data smoke pass: %d training samples loaded (%.1f samples/s); training is not implemented yet", count, rate)


if __name__ == "__main__":
    main()
