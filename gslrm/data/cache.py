"""Decoded samples kept in memory between epochs (``data.cache_mb``).

Reading a rodent sample (six 288x256 PNGs decoded, composited, cropped around the animal and resized) costs about
30 ms of one core; a default run reads every sample 16 times. On a 2-core machine the loader's workers take that time
from the training step itself (measured: 0.126 s a 32 px step with two workers, 0.076 s of compute alone), so a sample
is read once and then served from memory.

Each loader process (every worker, or the main process with ``num_workers=0``) holds its own cache, so the memory is
``workers x`` the cap at most; the caches last as long as the workers do (``persistent_workers``, the default). When
the cap is reached the cache keeps what it has and later samples are read from disk each time: in a shuffled epoch
no choice of which samples to keep reads fewer.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

__all__ = ["SampleCache", "sample_bytes"]


def sample_bytes(sample: dict) -> int:
    """The tensors' bytes of a sample (its strings are small next to the images)."""
    return sum(value.nbytes for value in sample.values() if isinstance(value, torch.Tensor))


class SampleCache:
    """Samples by key, up to ``capacity_bytes`` of tensors (0: nothing is kept)."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, not {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self.samples: dict[Hashable, dict] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> dict | None:
        """A copy of the stored sample (its dict only: the consumer may pop keys, as ``collate_views`` pops the
        names; tensors are shared and never written in place: collation stacks them into new ones), or None."""
        sample = self.samples.get(key)
        if sample is None:
            self.misses += 1
            return None
        self.hits += 1
        return dict(sample)

    def put(self, key: Hashable, sample: dict) -> None:
        """Keep a copy of ``sample`` if it fits in what is left."""
        size = sample_bytes(sample)
        if key in self.samples or self.used_bytes + size > self.capacity_bytes:
            return
        self.samples[key] = dict(sample)
        self.used_bytes += size
