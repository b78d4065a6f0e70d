"""LightningDataModule over :class:`ViewDataset` (and the generated rodent default)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from gslrm.data.dataset import DataConfig, ViewDataset, split_file
from gslrm.data.format import DataFormatError
from gslrm.data.resolution import ResolutionSchedule, resize_batch
from gslrm.depth.priors import DepthPriors

log = logging.getLogger(__name__)

__all__ = ["ViewDataModule", "collate_views", "is_empty"]


def collate_views(samples: list) -> dict | None:
    """Stack samples, dropping the ones the dataset skipped (``on_error: skip``); the count travels with the batch
    (``num_skipped``) so it is known in the main process even when workers did the skipping. A batch whose every
    sample was skipped is ``{"num_skipped": n}`` alone (see ``is_empty``)."""
    kept = [sample for sample in samples if sample is not None]
    if not kept:
        return {"num_skipped": torch.tensor(len(samples))}
    names = [sample.pop("names") for sample in kept if "names" in sample]
    batch = default_collate(kept)
    if names:
        batch["names"] = names  # [b][v] strings (default_collate would transpose them to [v][b])
    batch["num_skipped"] = torch.tensor(len(samples) - len(kept))
    return batch


def is_empty(batch: dict | None) -> bool:
    """True for a batch with no sample left (all skipped by the data policy)."""
    return batch is None or "image" not in batch


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:  # each worker's dataset copy draws its own random views
        info.dataset.rng = np.random.default_rng(seed)


class ViewDataModule(L.LightningDataModule):
    """The splits' loaders, and the depth priors of training batches (``priors``: the loss's, or None)."""

    def __init__(self, config: DataConfig, test_split: str = "test", priors: DepthPriors | None = None) -> None:
        super().__init__()
        self.config = config
        self.test_split = test_split  # what trainer.test runs on (eval.py split=val|test)
        self.priors = priors
        self.datasets: dict[str, ViewDataset] = {}
        self.resolution = ResolutionSchedule.parse(config.image_size_schedule, config.image_size)
        self.training_size = config.image_size  # the size of the last training batch (logged when it changes)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches are resized to the step's scheduled size (data.image_size_schedule), then get their
        depth priors and confidence here, on the training device (MiDaS runs in the main process, on the GPU where
        there is one, not in the loader's workers): the loss terms read them."""
        trainer = self.trainer  # None outside a fit
        if trainer is None or not trainer.training or is_empty(batch):
            return batch
        if self.resolution:
            size = self.resolution.size_at(trainer.global_step)
            if size != self.training_size:
                log.info("training at %d px from step %d (data.image_size_schedule)", size, trainer.global_step)
                self.training_size = size
            batch = resize_batch(batch, size)
        if self.priors is not None:
            batch = self.priors.attach(batch)
        return batch

    def prepare_data(self) -> None:
        """Generate the default rodent dataset once (local rank 0 only, as Lightning calls it)."""
        if self.config.generate:
            from gslrm.data.rodent import ensure_dataset

            if self.config.root is None:
                raise DataFormatError("data.root: not set for the generated rodent dataset")
            rendered = int(self.config.generator.get("supervision_views", 0))
            if self.config.supervision_views > rendered:
                raise DataFormatError(
                    f"data.supervision_views={self.config.supervision_views}: the generated dataset has {rendered} "
                    "per train sample; set data.generator.supervision_views (and a data.root of its own)"
                )
            ensure_dataset(Path(self.config.root), **self.config.generator)

    def dataset(self, split: str) -> ViewDataset:
        if split not in self.datasets:
            # train and val are read again every epoch / validation: their samples are kept once read
            cache_mb = self.config.cache_mb if split in ("train", "val") else 0.0
            self.datasets[split] = ViewDataset(self.config, split, cache_mb=cache_mb)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate"):
            self.dataset("val")
        if stage == "test":
            if not split_file(self.config, self.test_split).is_file():
                raise DataFormatError(
                    f"{split_file(self.config, self.test_split)}: split '{self.test_split}' not found"
                )
            self.dataset(self.test_split)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        config = self.config
        rank = self.trainer.global_rank if self.trainer is not None else 0
        generator = torch.Generator().manual_seed(config.seed + 1000 * rank)
        workers = config.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=config.persistent_workers and workers > 0,
            pin_memory=config.pin_memory and torch.cuda.is_available(),
            drop_last=shuffle,
            collate_fn=collate_views,
            worker_init_fn=_seed_worker,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.config.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.config.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, self.config.val_batch_size, shuffle=False)
