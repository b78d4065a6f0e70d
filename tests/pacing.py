"""Test-only callback, instantiated by train.py from ``+callbacks.pace._target_=pacing.Pace`` (with tests/ on
PYTHONPATH): every training step takes at least ``seconds`` of wall time, so that a run outlasts SLURM's signal
window on a fast machine as on a slow one."""

import time

from lightning.pytorch.callbacks import Callback


class Pace(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        time.sleep(max(0.0, self.seconds - (time.perf_counter() - self.started)))
