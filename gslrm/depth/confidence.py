"""Confidence maps [H, W] in [0, 1] (1 = trusted), computed at run time from a depth estimator.

``variance``: the estimator's depth for the image, its horizontal flip (flipped back), its grayscale (3 channels)
and the image plus Gaussian noise (sigma 0.01, clamped), the first ``num_augmentations`` (2-4) of these; the
per-pixel variance across them, min-max normalized per image; confidence = 1 - normalized variance.
``simple``: 1 - min-max normalized magnitude of the depth gradient (needs only a depth map, e.g. ground truth).
Maps are cached per image name: in memory (LRU, bounded) and optionally on disk, so each image is estimated once per
run. The cache lives with the loss (the training process), not in DataLoader workers, so worker processes neither
duplicate the estimates nor lose them when they exit.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.files import written_atomically

__all__ = ["augmentations", "variance_confidence", "gradient_confidence", "normalize", "ConfidenceCache"]

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
EPS = 1e-8


def normalize(values: Float[Tensor, "n h w"]) -> Float[Tensor, "n h w"]:
    """Min-max over each map. A map that is constant up to rounding (spread below 1e-4 of its magnitude) becomes 0:
    nothing in it is less trusted than anything else, and normalizing float noise would invent structure."""
    low = values.flatten(1).min(1).values[:, None, None]
    high = values.flatten(1).max(1).values[:, None, None]
    spread = high - low
    flat = spread <= 1e-4 * torch.maximum(high.abs(), low.abs()) + EPS
    return torch.where(flat, torch.zeros_like(values), (values - low) / spread.clamp_min(EPS))


def augmentations(images: Float[Tensor, "n 3 h w"], count: int, noise_std: float = 0.01, seed: int = 0):
    """(augmented images, undo) pairs: original, horizontal flip, grayscale, noise — the first ``count``."""
    if not 2 <= count <= 4:
        raise ValueError(f"num_augmentations: expected 2..4, got {count}")
    identity = lambda depth: depth  # noqa: E731
    gray = (images * torch.tensor(GRAY_WEIGHTS, device=images.device, dtype=images.dtype)[:, None, None]).sum(
        1, keepdim=True
    )
    generator = torch.Generator(device=images.device).manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype) * noise_std
    return [
        (images, identity),
        (images.flip(-1), lambda depth: depth.flip(-1)),
        (gray.expand_as(images).contiguous(), identity),
        ((images + noise).clamp(0, 1), identity),
    ][:count]


@torch.no_grad()
def variance_confidence(
    images: Float[Tensor, "n 3 h w"],
    estimate: Callable[[Tensor], Tensor],
    num_augmentations: int = 4,
    noise_std: float = 0.01,
) -> Float[Tensor, "n h w"]:
    depths = [
        undo(estimate(augmented))[:, 0] for augmented, undo in augmentations(images, num_augmentations, noise_std)
    ]
    variance = torch.stack(depths).var(dim=0, unbiased=False)
    return 1.0 - normalize(variance)


@torch.no_grad()
def gradient_confidence(depth: Float[Tensor, "n 1 h w"]) -> Float[Tensor, "n h w"]:
    """1 - normalized |grad depth| (central differences inside, one-sided at the borders)."""
    dy, dx = torch.gradient(depth[:, 0], dim=(1, 2))
    return 1.0 - normalize(torch.sqrt(dx * dx + dy * dy))


class ConfidenceCache:
    """name -> confidence map [H, W]: an LRU of at most ``max_items`` maps, optionally backed by ``directory``
    (one .npy per name, written atomically so ranks and runs can share it)."""

    def __init__(self, max_items: int = 10000, directory: str | None = None) -> None:
        self.max_items = max_items
        self.directory = Path(directory) if directory else None
        self.items: OrderedDict[str, Tensor] = OrderedDict()
        self.misses = 0

    def _file(self, name: str) -> Path:
        return self.directory / (hashlib.sha1(name.encode()).hexdigest() + ".npy")

    def get(self, name: str) -> Tensor | None:
        if name in self.items:
            self.items.move_to_end(name)
            return self.items[name]
        if self.directory is not None and self._file(name).is_file():
            value = torch.from_numpy(np.load(self._file(name)))
            self._remember(name, value)
            return value
        return None

    def put(self, name: str, value: Tensor) -> None:
        value = value.detach().float().cpu()
        self._remember(name, value)
        if self.directory is not None:
            with written_atomically(self._file(name)) as partial:  # ranks may share the cache folder
                np.save(partial, value.numpy())

    def _remember(self, name: str, value: Tensor) -> None:
        self.items[name] = value
        self.items.move_to_end(name)
        while len(self.items) > self.max_items:
            self.items.popitem(last=False)

    def __len__(self) -> int:
        return len(self.items)
