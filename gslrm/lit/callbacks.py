"""Callbacks: the checkpoint every run ends with (also on SIGTERM, e.g. SLURM preemption), and the wandb run id kept
for resuming."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

__all__ = ["SaveLastOnExit", "WANDB_ID_FILE"]

WANDB_ID_FILE = "wandb_id.txt"


class SaveLastOnExit(Callback):
    """Write ``path`` when training ends for any reason: ``max_steps``, the end of the data, or Ctrl-C / an error
    (ModelCheckpoint alone only writes ``last.ckpt`` every N steps). Also records the wandb run id beside it."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                (self.path.parent / WANDB_ID_FILE).write_text(logger.experiment.id)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the whole state (last.ckpt resumes); said explicitly, Lightning logs a line about its default otherwise
        trainer.save_checkpoint(self.path, weights_only=False)
        log.info("saved %s (step %d)", self.path, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from gslrm.lit.checkpoint_io import CheckpointSaveError

        if isinstance(exception, CheckpointSaveError):  # the disk refused a save: do not try again on the way out
            return
        # SIGTERM (preemption) reaches every rank at the same step (Lightning broadcasts it), so a collective save is
        # safe; after another exception the other ranks may be anywhere and a collective save could hang
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            log.warning("not saving last.ckpt after %s in a multi-process run", type(exception).__name__)
            return
        try:
            self._save(trainer)
        except CheckpointSaveError as error:
            log.error("%s", error)
