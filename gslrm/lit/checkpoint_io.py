"""Checkpoints that are whole or absent: atomic writes, and telling a readable checkpoint from a torn one.

Every checkpoint this trainer writes (ModelCheckpoint's ``step_*.ckpt`` and ``last.ckpt``, ``SaveLastOnExit``, the
SLURM requeue checkpoint) goes through ``AtomicCheckpointIO``: the bytes go to a hidden temporary file in the same
folder, are flushed and fsynced, and only then renamed over the target (``os.replace`` is atomic on POSIX), so a kill
at any moment leaves either the previous file or the new one. A failed write (disk full, permission) removes the
temporary file, keeps the previous checkpoint and raises ``CheckpointSaveError`` with one line.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gslrm import slurm

log = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "CheckpointSaveError", "atomic_torch_save", "unreadable_reason", "PARTIAL_MARKER"]

PARTIAL_MARKER = ".partial-"  # hidden temporaries: ".<name>.partial-<pid>", never matched by "*.ckpt"
SLOW_WRITE_ENV = "GSLRM_TEST_SLOW_CHECKPOINT_WRITE"  # tests: seconds to pause half-way through each write


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


class _SlowWriter:
    """File wrapper for fault-injection tests: pauses once after half of ``expected`` bytes were written."""

    def __init__(self, handle, pause: float, expected: int) -> None:
        self.handle, self.pause, self.half, self.written = handle, pause, expected // 2, 0

    def write(self, data) -> int:
        before = self.written
        self.written += len(data)
        if before < self.half <= self.written:
            self.handle.flush()
            time.sleep(self.pause)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}{PARTIAL_MARKER}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            pause = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
            if pause > 0:
                size = _serialized_size(obj)
                torch.save(obj, _SlowWriter(handle, pause, size))
            else:
                torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise CheckpointSaveError(f"could not save checkpoint {path}: {reason} (the previous file is kept)") from None


def _serialized_size(obj: Any) -> int:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (the directory entry), where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _CPU(storage, location):  # noqa: N802 - Lightning's default map_location: every tensor to CPU first
    return storage


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic writes (``trainer.save_checkpoint`` and ModelCheckpoint)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)
        # which process wrote it: under DDP over several nodes, rank 0 alone must (the run directory is shared)
        log.info("checkpoint written: %s (rank %d on %s)", Path(path).name, slurm.global_rank(), socket.gethostname())

    def load_checkpoint(self, path, map_location: Any = _CPU, weights_only: bool | None = None) -> dict[str, Any]:
        """Resuming (``ckpt_path``, a SLURM restart) reads a checkpoint this trainer wrote into the run directory the
        user chose: Lightning's loop state and the optimizer's need full unpickling, so ``weights_only=False``. Foreign
        files (FaceLift's, ``model.init_from``, eval.py) go through ``gslrm.model.gslrm.read_checkpoint`` instead,
        with ``weights_only=True``."""
        return super().load_checkpoint(path, map_location, weights_only=False if weights_only is None else weights_only)


def unreadable_reason(path: str | Path) -> str | None:
    """None if ``path`` is a complete torch zip checkpoint (every member present and its CRC right), else why not.

    Reads the whole file once (no unpickling): a file cut short by a kill, an empty file and a file of another
    format are all caught here, before Lightning's loader would fail deep inside torch's zip reader."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("data.pkl") for name in names):
                return "not a torch checkpoint (no data.pkl in the archive)"
            broken = archive.testzip()
            if broken is not None:
                return f"corrupt member {broken}"
    except zipfile.BadZipFile as error:
        return f"not a readable checkpoint ({error}; truncated or another format)"
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        return f"cannot read it ({type(error).__name__}: {error})"
    return None
