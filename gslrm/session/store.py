"""The sequence store: a session's Gaussians, frame by frame, in the rig's world frame, written as frames complete.

Layout of ``predict.out`` (``docs/predict.md`` is the reader's reference)::

    sequence.zarr/           a zarr v3 group, readable with ``zarr.open_group`` alone
      frame [F] int64        source frame index          time [F] float64   seconds (NaN: no frame rate)
      attrs["samples"]       sample folder per frame     world_from_normalized [F, 4, 4] float64
      count [F] int32        Gaussians kept (-1: frame skipped by predict.on_error=skip)
      the Gaussians [F, K, ...] in world units, laid out by predict.encoding (``encoding``: compact's quantized
      arrays, or float32's means, scales, rotations, opacities, colors); attrs["decoding"] says how to read them
    manifest.json            checkpoint sha256, resolved config, frames, chunking; "complete" once every frame is
    done/chunk_NNNNNN.json   per chunk: the frames done and their table rows (written after the chunk's arrays)
    frames.csv               the per-frame table (written once every frame is done)
    ply/frame_NNNNNN.ply     predict.ply=true

Why zarr, and why so: every ``frames_per_chunk`` frames are one chunk of every array, and a chunk has exactly one
writer (``frames.chunks_of_worker``), so shards on several nodes write one store without locks between frames; zarr's
local store writes each chunk file through a temporary file and a rename, so a kill leaves whole chunks only. A
chunk counts as done through its ``done/`` marker, written after its arrays, so a kill between the two redoes only
that chunk's missing frames. HDF5 (h5py) was the alternative: one file takes one writer at a time, and a killed
writer can leave the whole file unreadable. K, the model's Gaussian count per frame, is the capacity; slots past
``count`` are zero (and compress to nothing).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from gslrm.session.encoding import DECODING, Encoding, array_layout, decode, encode
from gslrm.session.frames import SessionFrame

__all__ = ["SequenceStore", "FrameResult", "StoreMismatchError", "TABLE_COLUMNS", "checkpoint_sha256", "FORMAT"]

FORMAT = "gslrm-sequence/1"
ZARR_DIR = "sequence.zarr"
MANIFEST = "manifest.json"
DONE_DIR = "done"
TABLE = "frames.csv"
SLOW_WRITE_ENV = "GSLRM_TEST_SLOW_CHUNK_WRITE"  # tests: seconds to pause after each array of a chunk (kill -9 test)
TABLE_COLUMNS = (
    ["frame", "time", "sample", "gaussians", "centroid_x", "centroid_y", "centroid_z"]
    + [f"axis{a}_{c}" for a in range(3) for c in "xyz"]
    + ["extent0", "extent1", "extent2", "status"]
)


class StoreMismatchError(ValueError):
    """``predict.out`` holds a sequence of another checkpoint, data or selection (one line naming what differs)."""


def checkpoint_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FrameResult:
    """One frame's kept Gaussians in world units (or the reason it was skipped) and its table row."""

    position: int
    world_from_normalized: np.ndarray  # [4, 4] float64 (NaN for a skipped frame)
    means: np.ndarray  # [n, 3]
    scales: np.ndarray  # [n, 3]
    rotations: np.ndarray  # [n, 4]
    opacities: np.ndarray  # [n]
    colors: np.ndarray  # [n, 3]
    error: str | None = None

    @classmethod
    def skipped(cls, position: int, error: str) -> FrameResult:
        empty = np.zeros((0, 3))
        return cls(position, np.full((4, 4), np.nan), empty, empty, np.zeros((0, 4)), np.zeros(0), empty, error)

    @property
    def count(self) -> int:
        return -1 if self.error is not None else len(self.opacities)

    def shape_summary(self) -> dict:
        """The opacity-weighted centroid, principal axes (rows, largest extent first) and extents (the weighted
        standard deviation along each axis), in world units: the first behavioural readout of a frame."""
        weights = self.opacities.astype(np.float64)
        if self.error is not None or weights.sum() <= 0:
            nan = [math.nan] * 3
            return {"centroid": nan, "axes": [nan] * 3, "extents": nan}
        weights = weights / weights.sum()
        centroid = weights @ self.means
        offsets = self.means - centroid
        covariance = (offsets * weights[:, None]).T @ offsets
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1]
        axes = vectors[:, order].T
        axes *= np.where(axes[np.arange(3), np.abs(axes).argmax(1)] < 0, -1.0, 1.0)[:, None]  # sign: largest > 0
        return {
            "centroid": centroid.tolist(),
            "axes": axes.tolist(),
            "extents": np.sqrt(values[order].clip(0)).tolist(),
        }


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


class SequenceStore:
    """One ``predict.out`` folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.lock = FileLock(str(self.root.parent / f".{self.root.name}.lock"))

    # -- creation and the manifest ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def open_or_create(self, frames: list[SessionFrame], capacity: int, chunk: int, identity: dict, config: dict):
        """Create the store for ``frames`` or, when it exists, check that it is this prediction's (``identity``:
        the checkpoint hash and every setting that changes what is stored, ``encoding`` among them) and reopen it.
        Safe when several shards start at once (file lock)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.manifest_path.is_file():
                self._check(self.manifest(), identity, frames)
                return self
            self._create(frames, capacity, chunk, identity, config)
        return self

    def _check(self, manifest: dict, identity: dict, frames: list[SessionFrame]) -> None:
        stored = manifest["identity"]
        differs = sorted(key for key in set(stored) | set(identity) if stored.get(key) != identity.get(key))
        if not differs and manifest["frames"] != [f.source_frame for f in frames]:
            differs = ["the frames selected (split, frames=START:STOP:STEP)"]
        if differs:
            first = differs[0]
            detail = f" ({stored.get(first)!r} there, {identity.get(first)!r} now)" if first in stored else ""
            raise StoreMismatchError(
                f"predict.out: {self.root} holds another prediction: {', '.join(differs)} differ{detail}; "
                "set another predict.out, or predict.overwrite=true to replace it"
            )

    def _create(self, frames, capacity: int, chunk: int, identity: dict, config: dict) -> None:
        import zarr

        group = zarr.open_group(self.root / ZARR_DIR, mode="w")
        count = len(frames)
        encoding = Encoding(identity.get("encoding", Encoding.compact))
        gaussians, per_frame = array_layout(encoding)
        group.attrs.update(
            {
                "format": FORMAT,
                "frames": count,
                "capacity": capacity,
                "frames_per_chunk": chunk,
                "encoding": str(encoding),
                "decoding": DECODING[encoding],
                # strings have no stable zarr v3 data type yet: the sample folder of each frame, as a list
                "samples": [f.sample_id for f in frames],
                "units": identity.get("units") or "the calibration's (w2c translations)",
                "frame_of_reference": "the rig's world frame (the calibration's w2c), not the normalized one",
                "fields": {
                    "count": "Gaussians kept in frame i: means[i, :count[i]] etc.; -1 = frame skipped",
                    "means": "centres, world frame and units",
                    "rotations": "unit quaternions (w, x, y, z), world frame",
                    "scales": "standard deviations along the rotated axes, world units",
                    "opacities": "in (0, 1]: only those above predict.min_opacity are kept",
                    "colors": "view-independent RGB (SH degree 0 as the rasterizer evaluates it)",
                    "world_from_normalized": "4x4 similarity from the model's normalized frame to the world",
                },
            }
        )
        group.create_array("frame", data=np.array([f.source_frame for f in frames], np.int64), chunks=(count,))
        group.create_array("time", data=np.array([f.time for f in frames], np.float64), chunks=(count,))
        group.create_array("count", shape=(count,), dtype=np.int32, chunks=(chunk,), fill_value=-1)
        group.create_array("world_from_normalized", shape=(count, 4, 4), dtype=np.float64, chunks=(chunk, 4, 4))
        for name, (trailing, dtype) in gaussians.items():
            shape = (count, capacity, *trailing)
            group.create_array(name, shape=shape, dtype=dtype, chunks=(chunk, *shape[1:]), fill_value=0)
        for name, trailing in per_frame.items():
            group.create_array(name, shape=(count, *trailing), dtype=np.float64, chunks=(chunk, *trailing))
        (self.root / DONE_DIR).mkdir(exist_ok=True)
        manifest = {
            "format": FORMAT,
            "identity": identity,
            "config": config,
            "frames": [f.source_frame for f in frames],
            "frames_per_chunk": chunk,
            "capacity": capacity,
            "encoding": str(encoding),
            "complete": False,
        }
        _write_atomic(self.manifest_path, json.dumps(manifest, indent=1))  # last: its presence means "created"

    # -- progress ------------------------------------------------------------------------------------------------
    def _marker(self, chunk: int) -> Path:
        return self.root / DONE_DIR / f"chunk_{chunk:06d}.json"

    def done_rows(self, chunk: int) -> dict[int, dict]:
        """The table rows of ``chunk``'s finished frames, by position (an unreadable marker: none)."""
        path = self._marker(chunk)
        if not path.is_file():
            return {}
        try:
            return {int(k): v for k, v in json.loads(path.read_text())["rows"].items()}
        except (json.JSONDecodeError, KeyError, ValueError):
            return {}

    def done_positions(self) -> set[int]:
        manifest = self.manifest()
        chunks = math.ceil(len(manifest["frames"]) / manifest["frames_per_chunk"])
        return {position for chunk in range(chunks) for position in self.done_rows(chunk)}

    # -- writing -------------------------------------------------------------------------------------------------
    def write_chunk(self, chunk: int, results: list[FrameResult], frames: list[SessionFrame]) -> None:
        """Store ``results`` (frames of ``chunk``) beside the chunk's frames already done, then its marker."""
        import zarr

        if not results:
            return
        group = zarr.open_group(self.root / ZARR_DIR, mode="r+")
        size, capacity = group.attrs["frames_per_chunk"], group.attrs["capacity"]
        encoding = Encoding(group.attrs["encoding"])
        gaussians, per_frame = array_layout(encoding)
        start = chunk * size
        stop = min(start + size, group["count"].shape[0])
        rows = self.done_rows(chunk)
        # the whole chunk at once: one read of what an earlier attempt wrote, one atomic write per array
        names = [*gaussians, *per_frame, "count", "world_from_normalized"]
        blocks = {name: group[name][start:stop] for name in names}
        for result in results:
            slot = result.position - start
            if not 0 <= slot < stop - start:
                raise ValueError(f"frame {result.position} is not in chunk {chunk}")
            kept = len(result.opacities)
            if kept > capacity:
                raise ValueError(f"frame {result.position}: {kept} Gaussians, the store holds {capacity}")
            fields = ("means", "scales", "rotations", "opacities", "colors")
            encoded = encode(encoding, *(getattr(result, field) for field in fields))
            for name in gaussians:
                blocks[name][slot] = 0
                blocks[name][slot, :kept] = encoded[name]
            for name in per_frame:
                blocks[name][slot] = encoded[name]
            blocks["count"][slot] = result.count
            blocks["world_from_normalized"][slot] = result.world_from_normalized
            rows[result.position] = table_row(frames[result.position], result)
        pause = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
        for name, block in blocks.items():
            group[name][start:stop] = block
            time.sleep(pause)
        _write_atomic(self._marker(chunk), json.dumps({"chunk": chunk, "rows": rows}))

    def finalize(self) -> bool:
        """Once every frame is done: the per-frame table and ``complete`` in the manifest. False while frames are
        missing (another shard still working). Idempotent."""
        with self.lock:
            manifest = self.manifest()
            count, size = len(manifest["frames"]), manifest["frames_per_chunk"]
            rows: dict[int, dict] = {}
            for chunk in range(math.ceil(count / size)):
                rows.update(self.done_rows(chunk))
            if len(rows) < count:
                return False
            if manifest["complete"]:
                return True
            table = self.root / TABLE
            partial = table.with_name(f".{TABLE}.partial")
            with open(partial, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
                writer.writeheader()
                for position in range(count):
                    writer.writerow(rows[position])
            os.replace(partial, table)
            skipped = sorted(p for p, row in rows.items() if row["status"] != "ok")
            manifest.update(complete=True, frames_done=count, frames_skipped=len(skipped))
            _write_atomic(self.manifest_path, json.dumps(manifest, indent=1))
            return True

    # -- reading -------------------------------------------------------------------------------------------------
    def group(self):
        import zarr

        return zarr.open_group(self.root / ZARR_DIR, mode="r")

    def read_frame(self, position: int) -> dict[str, np.ndarray]:
        """Frame ``position``'s kept Gaussians (world frame, decoded to float32), reading only its chunk."""
        return next(self.iter_frames(position, position + 1))

    def iter_frames(self, start: int = 0, stop: int | None = None):
        """Frames ``start:stop`` in order, as :meth:`read_frame` gives them, each chunk read and decompressed once
        (a frame-by-frame read of a sequence would decompress each chunk ``frames_per_chunk`` times)."""
        group = self.group()
        encoding = Encoding(group.attrs["encoding"])
        gaussians, per_frame = array_layout(encoding)
        size = group.attrs["frames_per_chunk"]
        stop = group["count"].shape[0] if stop is None else stop
        for block_start in range(start, stop, size):
            block_stop = min(stop, (block_start // size + 1) * size)  # within one chunk
            block = {name: group[name][block_start:block_stop] for name in [*gaussians, *per_frame]}
            counts = group["count"][block_start:block_stop]
            frames, times = group["frame"][block_start:block_stop], group["time"][block_start:block_stop]
            for slot, count in enumerate(counts.tolist()):
                kept = max(count, 0)
                stored = {name: block[name][slot, :kept] for name in gaussians}
                stored |= {name: block[name][slot] for name in per_frame}
                extra = {"count": count, "frame": int(frames[slot]), "time": float(times[slot])}
                yield decode(encoding, stored) | extra

    def playback_fps(self, default: float = 25.0) -> float:
        """Frames per second that play the sequence in real time: one over the median step of its times (a
        recording taken every 10th frame plays at a tenth of its rate); ``default`` without times."""
        times = self.group()["time"][:]
        steps = np.diff(times[np.isfinite(times)])
        steps = steps[steps > 0]
        return float(1.0 / np.median(steps)) if len(steps) else default

    def bytes_on_disk(self) -> int:
        return sum(path.stat().st_size for path in (self.root / ZARR_DIR).rglob("*") if path.is_file())


def table_row(frame: SessionFrame, result: FrameResult) -> dict:
    summary = result.shape_summary()
    row = {
        "frame": frame.source_frame,
        "time": frame.time,
        "sample": frame.sample_id,
        "gaussians": result.count,
        "status": "ok" if result.error is None else f"skipped: {result.error}",
    }
    row.update(zip(["centroid_x", "centroid_y", "centroid_z"], summary["centroid"], strict=True))
    for a, axis in enumerate(summary["axes"]):
        row.update({f"axis{a}_{c}": value for c, value in zip("xyz", axis, strict=True)})
    row.update({f"extent{a}": value for a, value in enumerate(summary["extents"])})
    return row
