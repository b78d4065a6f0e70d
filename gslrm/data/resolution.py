"""Progressive resolution: training steps at a smaller image size first, as GS-LRM trains at 256 px before 512 px.

``data.image_size_schedule: [[0, 32], [1200, 64]]`` trains at 32 px from step 0 and at 64 px from optimizer step
1200. The loader always reads at ``data.image_size`` (validation and eval use that size); a training batch is
area-averaged down to the scheduled size on the training device, with its intrinsics scaled by the same factor
(pixel centres at +0.5: fx, fy, cx and cy all scale), so the switch costs no loader restart and no worker sync.
The model is resolution-agnostic (patch tokens, no learnt position table), so the same weights train at both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

# per-pixel maps of a training batch: how each follows the image down (depth never blends across edges)
MAP_MODES = {"depth": "nearest-exact", "depth_prior": "area", "confidence": "area"}


@dataclass(frozen=True)
class ResolutionSchedule:
    """(first optimizer step, image size) pairs in step order, sizes capped at the loader's ``image_size``; before
    the first pair, and without pairs, the loader's own size."""

    steps: tuple[tuple[int, int], ...]
    image_size: int

    @classmethod
    def parse(cls, pairs, image_size: int, key: str = "data.image_size_schedule") -> ResolutionSchedule:
        """Checked ``[[step, size], ...]``; a ValueError names ``key`` and the bad entry."""
        steps = []
        for entry in pairs or []:
            values = list(entry) if isinstance(entry, list | tuple) else None
            if values is None or len(values) != 2 or not all(isinstance(v, int) for v in values):
                raise ValueError(f"{key}: {entry!r}: expected [step, image size], two integers")
            step, size = values
            if steps and step <= steps[-1][0]:
                raise ValueError(f"{key}: step {step} after step {steps[-1][0]}: steps must increase")
            if step < 0 or size < 8:
                raise ValueError(f"{key}: [{step}, {size}]: expected a step >= 0 and a size of at least 8 pixels")
            # the loader reads at data.image_size and batches are only made smaller: a size above it means that size
            # (so the default schedule holds when data.image_size is overridden, as tests and quick runs do)
            steps.append((step, min(size, image_size)))
        return cls(tuple(steps), image_size)

    def size_at(self, step: int) -> int:
        size = self.image_size
        for first, scheduled in self.steps:
            if step >= first:
                size = scheduled
        return size

    def __bool__(self) -> bool:
        return bool(self.steps)


def resize_views(image: Tensor, fxfycxcy: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Views ``image`` [b, v, c, h, w] resized to ``width`` pixels across (smaller: each pixel the mean of the area it
    covers; larger: bilinear), with their intrinsics: pixel centres sit at +0.5, so fx, fy, cx and cy all scale by
    the same factor."""
    height = round(image.shape[-2] * width / image.shape[-1])
    factor = width / image.shape[-1]
    mode = {"mode": "area"} if factor < 1 else {"mode": "bilinear", "align_corners": False}
    resized = F.interpolate(image.flatten(0, 1), size=(height, width), **mode)
    return resized.unflatten(0, image.shape[:2]), fxfycxcy * factor


def resize_batch(batch: dict, size: int) -> dict:
    """A copy of training ``batch`` whose views (image, intrinsics, per-pixel maps) are ``size`` pixels across."""
    image = batch["image"]
    if image.shape[-1] == size:
        return batch
    resized = dict(batch)
    resized["image"], resized["fxfycxcy"] = resize_views(image, batch["fxfycxcy"], size)
    height = resized["image"].shape[-2]
    for key, mode in MAP_MODES.items():
        if key in batch:
            resized[key] = _resize_maps(batch[key], (height, size), mode)
    return resized


def _resize_maps(maps: Tensor, shape: tuple[int, int], mode: str) -> Tensor:
    return F.interpolate(maps.flatten(0, 1), size=shape, mode=mode).unflatten(0, maps.shape[:2])
