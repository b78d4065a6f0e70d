"""Which source frames to import (``--frames``) and how they split into train / val / test (``--split``)."""

from __future__ import annotations

import re
from pathlib import Path

from gslrm.data.format import DataFormatError

__all__ = ["parse_frames", "parse_split", "split_frames"]


def parse_frames(spec: str | None, available: int) -> list[int]:
    """``START:STOP:STEP`` (Python slice, STOP exclusive, parts optional) or a file with one frame index per line.

    ``available`` is the shortest video's frame count (0 when no container states it, then STOP is required).
    """
    spec = spec or "::"
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*(?::\s*(\d*)\s*)?", spec)
    if match:
        start, stop, step = (int(part) if part else None for part in match.groups())
        if stop is None:
            if not available:
                raise DataFormatError(
                    f"--frames {spec}: the videos do not state their length; give STOP (e.g. 0:18000:10)"
                )
            stop = available
        if step == 0:
            raise DataFormatError(f"--frames {spec}: STEP must be > 0")
        frames = list(range(start or 0, stop, step or 1))
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataFormatError(f"--frames {spec}: neither START:STOP:STEP nor a file of frame indices")
        frames = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            if not entry.isdigit():
                raise DataFormatError(f"{path}: line {number}: expected a frame index (an integer >= 0), got {entry!r}")
            frames.append(int(entry))
        frames = sorted(set(frames))
    if not frames:
        raise DataFormatError(f"--frames {spec}: selects no frames")
    return frames


def parse_split(spec: str) -> dict[str, float]:
    """``val=0.1,test=0.1`` -> {"val": 0.1, "test": 0.1}; the rest is train."""
    fractions = {"val": 0.0, "test": 0.0}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in fractions:
            raise DataFormatError(f"--split {spec}: unknown split {key!r} (val, test; the rest is train)")
        try:
            fractions[key] = float(value)
        except ValueError:
            raise DataFormatError(f"--split {spec}: {key}: expected a fraction, got {value!r}") from None
        if not 0.0 <= fractions[key] < 1.0:
            raise DataFormatError(f"--split {spec}: {key}: a fraction in [0, 1), got {value}")
    if fractions["val"] + fractions["test"] >= 1.0:
        raise DataFormatError(f"--split {spec}: nothing left for train")
    return fractions


def split_frames(frames: list[int], fractions: dict[str, float], gap: int) -> tuple[dict[str, list[int]], list[int]]:
    """Contiguous time blocks train | val | test. Frames within ``gap`` source frames of the next block's first
    frame are dropped, so no val (test) frame has a train (val) neighbour closer than ``gap + 1`` frames.

    Returns the splits and the dropped frames.
    """
    count = len(frames)
    sizes = {key: max(1, round(count * fraction)) if fraction > 0 else 0 for key, fraction in fractions.items()}
    train_end = count - sizes["val"] - sizes["test"]
    blocks = {
        "train": frames[:train_end],
        "val": frames[train_end : train_end + sizes["val"]],
        "test": frames[train_end + sizes["val"] :],
    }
    dropped = []
    order = [key for key in ("train", "val", "test") if blocks[key]]
    for key, following in zip(order, order[1:], strict=False):
        boundary = blocks[following][0]
        kept = [frame for frame in blocks[key] if boundary - frame > gap]
        dropped += [frame for frame in blocks[key] if boundary - frame <= gap]
        blocks[key] = kept
    for key in ("train", *(k for k in ("val", "test") if sizes[k])):
        if not blocks[key]:
            raise DataFormatError(
                f"--split-gap {gap}: leaves no {key} frames out of {count} selected; lower --split-gap or select more frames"
            )
    return blocks, sorted(dropped)
