"""Files that are whole or absent, and work that one process at a time may do.

- ``written_atomically(target)``: the caller writes a hidden partial file beside ``target``; it is renamed onto
  ``target`` (atomic on POSIX) when the block ends, removed if the block raises. A killed process leaves no half file
  where readers look. Used by the importer's images and JSON, the depth cache, the compiled rasterizer's library and
  the weights downloads; checkpoints add fsyncs and their own errors (``lit/checkpoint_io.py``).
- ``exclusive_lock(path)``: an ``flock`` held for the block and released even when the holder is killed, for work
  that concurrent processes (DDP ranks, array jobs) must not do twice: downloads, gsplat's kernel build.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["written_atomically", "exclusive_lock"]


@contextmanager
def written_atomically(target: Path | str) -> Iterator[Path]:
    """Yields ``.<name>.partial-<pid><suffix>`` beside ``target`` (the suffix kept for writers that go by it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def exclusive_lock(path: Path | str) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
