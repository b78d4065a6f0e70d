"""Which frames a prediction covers, in what order, at what time, and which worker does each.

A recording imported by ``python -m gslrm.data import`` has one sample folder per source frame, whose
``opencv_cameras.json`` carries ``source_frame``, and ``import_info.json`` at the root carries the frame rate. Data
without them (a hand-made dataset) is taken in split-file order, frame = position, time unknown (NaN).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from gslrm.data.dataset import DataConfig, split_file
from gslrm.data.format import CAMERAS_FILE, DataFormatError, read_split

log = logging.getLogger(__name__)

__all__ = ["SessionFrame", "FrameRange", "select_frames", "recording_fps", "source_frame", "chunks_of_worker", "SPLITS"]

SPLITS = ("train", "val", "test")
INFO_FILE = "import_info.json"


@dataclass(frozen=True)
class FrameRange:
    """``START:STOP:STEP`` over source frame indices (STOP exclusive; any part may be empty)."""

    start: int | None = None
    stop: int | None = None
    step: int = 1

    @classmethod
    def parse(cls, text: str | None) -> FrameRange:
        if text is None or str(text).strip() in ("", ":", "::"):
            return cls()
        parts = str(text).split(":")
        if len(parts) > 3 or not all(p.strip().lstrip("-").isdigit() or not p.strip() for p in parts):
            raise ValueError(f"frames: {text!r} is not START:STOP:STEP (integers, any part may be empty)")
        numbers = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
        start, stop, step = numbers
        if step is not None and step < 1:
            raise ValueError(f"frames: step must be >= 1, got {step}")
        if (start is not None and start < 0) or (stop is not None and stop < 0):
            raise ValueError(f"frames: {text!r}: frame indices are >= 0")
        return cls(start, stop, step or 1)

    def __contains__(self, frame: int) -> bool:
        start = self.start or 0
        if frame < start or (self.stop is not None and frame >= self.stop):
            return False
        return (frame - start) % self.step == 0


@dataclass(frozen=True)
class SessionFrame:
    """One frame of the sequence: its position in the store, its sample and where it sits in the recording."""

    position: int
    sample: Path
    source_frame: int
    time: float  # seconds since the recording's first frame; NaN without a frame rate

    @property
    def sample_id(self) -> str:
        return self.sample.name


def recording_fps(root: Path | str | None) -> float | None:
    """The frame rate ``import_info.json`` records (None when there is none)."""
    path = Path(root or ".") / INFO_FILE
    if not path.is_file():
        return None
    try:
        fps = json.loads(path.read_text()).get("fps")
    except (json.JSONDecodeError, OSError) as error:
        raise DataFormatError(f"{path}: cannot read ({error})") from None
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise DataFormatError(f"{path}: fps: expected a positive number, got {fps!r}")
    return float(fps)


def source_frame(sample: Path) -> int | None:
    try:
        value = json.loads((sample / CAMERAS_FILE).read_text()).get("source_frame")
    except (OSError, json.JSONDecodeError):
        return None  # the dataset names the file and the field when it loads the sample
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def select_frames(config: DataConfig, split: str, frames: FrameRange, fps: float | None = None) -> list[SessionFrame]:
    """The samples of ``split`` (``all``: every split file there is) in source-frame order, within ``frames``."""
    root = Path(config.root) if config.root else Path(".")
    names = SPLITS if split == "all" else (split,)
    listed: dict[Path, None] = {}
    for name in names:
        path = split_file(config, name)
        if split == "all" and not path.is_file():
            continue
        for sample in read_split(root, path):
            listed.setdefault(sample, None)
    if not listed:
        raise DataFormatError(f"{root}: split=all: no split file ({', '.join(f'{s}.txt' for s in SPLITS)})")
    samples = list(listed)
    sources = [source_frame(sample) for sample in samples]
    if all(source is not None for source in sources):
        order = sorted(range(len(samples)), key=lambda i: (sources[i], str(samples[i])))
    else:
        log.info("no source_frame in %d of %d samples: frames in split-file order", sources.count(None), len(samples))
        order, sources = list(range(len(samples))), list(range(len(samples)))
    fps = fps if fps is not None else recording_fps(config.root)
    chosen = [i for i in order if sources[i] in frames]
    if not chosen:
        raise ValueError(f"frames: no frame of split={split} in {frames.start}:{frames.stop}:{frames.step}")
    return [
        SessionFrame(position, samples[i], sources[i], sources[i] / fps if fps else math.nan)
        for position, i in enumerate(chosen)
    ]


def chunks_of_worker(num_chunks: int, worker: int, num_workers: int) -> list[int]:
    """The chunks worker ``worker`` of ``num_workers`` writes: every ``num_workers``-th, so that each chunk has one
    writer and the workers' shares differ by at most one chunk."""
    if not 0 <= worker < num_workers:
        raise ValueError(f"predict.shard: {worker} is not in 0..{num_workers - 1}")
    return list(range(worker, num_chunks, num_workers))
