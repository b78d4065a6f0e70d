"""``<run dir>/curve.csv``: one row per validation with the wall-clock time it was reached, so that runs of different
recipes are compared at equal compute (``python -m gslrm.curves``), not at equal steps.

Columns: ``step``; ``wall_s``, seconds since training started (validation included: what the run cost);
``val_s``, the part of it spent validating (its share is what makes the curve's points affordable); ``train_s``, the
rest; then every ``val/*`` metric Lightning holds after that validation. The sanity check and a validation before
the first step count as step 0 with the time spent so far. Rank 0 writes; a resumed run appends, its clock
continuing from the last row.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["ValidationCurve", "CURVE_FILE"]

CURVE_FILE = "curve.csv"


class ValidationCurve(Callback):
    def __init__(self, output_dir: str, enabled: bool = True) -> None:
        self.path = Path(output_dir) / CURVE_FILE
        self.enabled = enabled
        self.offset = 0.0  # seconds of earlier attempts (a resumed run)
        self.started = 0.0
        self.val_seconds = 0.0
        self.val_started = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.started:  # the clock starts once: at the validation before training, or at fit
            return
        self.started = time.perf_counter()
        if self.path.is_file():  # a resumed run: continue its clock
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            if rows:
                self.offset, self.val_seconds = float(rows[-1]["wall_s"]), float(rows[-1]["val_s"])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not trainer.is_global_zero or not self.started:
            return
        self.val_seconds += time.perf_counter() - self.val_started
        wall = self.offset + time.perf_counter() - self.started
        metrics = {
            key: float(value)
            for key, value in sorted(trainer.callback_metrics.items())
            if key.startswith("val/") and value.numel() == 1
        }
        row = {
            "step": trainer.global_step,
            "wall_s": wall,
            "val_s": self.val_seconds,
            "train_s": wall - self.val_seconds,
        }
        row |= metrics
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.is_file()
        header = list(row)
        if existing:  # keep the file's columns; a metric first seen now (LPIPS appears, say) gets its own column
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            header = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))
            if rows and set(header) != set(rows[0].keys()):
                with open(self.path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(rows)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            if not existing:
                writer.writeheader()
            writer.writerow(row)
