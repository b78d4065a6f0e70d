"""What an importer reads from a recording folder: the cameras, one video per camera and optional masks."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gslrm.data.format import DataFormatError
from gslrm.data.recordings.camera import RigCamera
from gslrm.data.recordings.video import VIDEO_SUFFIXES, VideoSource

__all__ = ["MaskFolder", "Recording", "find_masks", "frame_number"]


def frame_number(path: Path) -> int | None:
    """The frame index a mask file names: the last run of digits in its stem (``000123.png``, ``mask_123.png``)."""
    match = re.search(r"(\d+)$", path.stem)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class MaskFolder:
    """Mask images of one camera, one file per frame, found by the frame number in the file name."""

    folder: Path

    def describe(self) -> str:
        return str(self.folder)

    def frames(self, wanted: Sequence[int], gray: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        from PIL import Image

        files = {}
        for path in self.folder.iterdir():
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
                number = frame_number(path)
                if number is not None:
                    files[number] = path
        for index in sorted(set(wanted)):
            if index not in files:
                raise DataFormatError(f"{self.folder}: no mask image for frame {index}")
            with Image.open(files[index]) as image:
                yield index, np.asarray(image.convert("L"))


@dataclass
class Recording:
    """A rig's recording as found on disk: per camera (calibration order) a video and, optionally, masks."""

    format: str
    calibration: Path
    cameras: list[RigCamera]
    videos: list[VideoSource]
    masks: list[VideoSource | MaskFolder | None]
    pixel_convention: str  # "opencv" or "matlab": where pixel centres start (camera.py)
    units: str = "calibration units"
    notes: list[str] = field(default_factory=list)

    def camera_index(self, key: str) -> int:
        """A camera by its index in the calibration or by its name."""
        names = [camera.name for camera in self.cameras]
        if key in names:
            return names.index(key)
        if key.isdigit() and int(key) < len(self.cameras):
            return int(key)
        raise DataFormatError(
            f"{self.calibration}: camera {key!r}: not in the calibration (cameras: {', '.join(names)})"
        )


def find_masks(src: Path, given: Path | None, usual: str, keys: Sequence[str]) -> list[VideoSource | MaskFolder | None]:
    """The mask folder (``--masks``, else the format's ``usual`` folder under ``src`` if it exists); per camera key, ``folder/<key>.<video suffix>`` or a folder ``folder/<key>/`` of mask images; None without
    a mask folder. With a folder, every camera must have masks (a half-masked rig would train on mixed alphas)."""
    folder = given if given is not None else (src / usual if (src / usual).is_dir() else None)
    if folder is None:
        return [None] * len(keys)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: mask folder not found")
    masks = []
    for key in keys:
        videos = [folder / f"{key}{suffix}" for suffix in VIDEO_SUFFIXES if (folder / f"{key}{suffix}").is_file()]
        if videos:
            masks.append(VideoSource.single(videos[0]))
        elif (folder / key).is_dir():
            masks.append(MaskFolder(folder / key))
        else:
            raise DataFormatError(f"{folder}: no masks for camera {key!r} (expected {key}.mp4 or a folder {key}/)")
    return masks


def videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
