"""The on-disk format (FaceLift's, plus split files) and its validation.

```
ROOT/train.txt, ROOT/val.txt[, ROOT/test.txt]   one sample per line: a folder name under ROOT, or an absolute path
ROOT/<sample>/opencv_cameras.json               {"id": ..., "frames": [{w, h, fx, fy, cx, cy, w2c, file_path}, ...]}
ROOT/<sample>/images/cam_000.png ...            RGB (auto-masked) or RGBA, any bit depth
ROOT/<sample>/depth/cam_000.npy                 optional z-depth in raw calibration units, 0 = no depth
ROOT/<sample>/orbit/opencv_cameras.json         optional held-out views (eval only), images under orbit/
ROOT/<sample>/supervision/opencv_cameras.json   optional extra training targets (data.supervision_views)
```

Every problem is reported as a :class:`DataFormatError` whose message names the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataFormatError",
    "Frame",
    "CAMERAS_FILE",
    "ORBIT_DIR",
    "SUPERVISION_DIR",
    "read_cameras",
    "write_cameras",
    "read_split",
]

CAMERAS_FILE = "opencv_cameras.json"
ORBIT_DIR = "orbit"  # held-out views of a sample, never inputs or supervised: <sample>/orbit/opencv_cameras.json
# views from other viewpoints, supervised in training (never inputs): <sample>/supervision/opencv_cameras.json
SUPERVISION_DIR = "supervision"
FRAME_KEYS = ("w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path")


class DataFormatError(ValueError):
    """Bad input data; the message is one line naming the file and the field."""


@dataclass(frozen=True)
class Frame:
    """One calibrated view as stored on disk (raw calibration frame, pixels of the raw image)."""

    file_path: str
    width: int
    height: int
    fxfycxcy: np.ndarray  # [4] float64
    w2c: np.ndarray  # [4, 4] float64

    @property
    def c2w(self) -> np.ndarray:
        return np.linalg.inv(self.w2c)


def _number(path: Path, field: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataFormatError(f"{path}: {field}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise DataFormatError(f"{path}: {field}: not finite ({value})")
    if positive and value <= 0:
        raise DataFormatError(f"{path}: {field}: must be > 0, got {value}")
    return float(value)


def _w2c(path: Path, field: str, value: object) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataFormatError(f"{path}: {field}: not a 4x4 matrix of numbers ({error})") from None
    if matrix.shape == (3, 4):
        matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
    if matrix.shape != (4, 4):
        raise DataFormatError(f"{path}: {field}: expected a 4x4 (or 3x4) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataFormatError(f"{path}: {field}: contains NaN or Inf")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataFormatError(f"{path}: {field}: last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    determinant = float(np.linalg.det(rotation))
    if abs(determinant) < 1e-6:
        raise DataFormatError(f"{path}: {field}: singular rotation (det = {determinant:.3g})")
    orthogonality = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if orthogonality > 1e-3:
        raise DataFormatError(
            f"{path}: {field}: rotation is not orthonormal (max |R^T R - I| = {orthogonality:.3g}); "
            "w2c must be a rigid world->camera transform (scale belongs in the translation units)"
        )
    if determinant < 0:
        raise DataFormatError(f"{path}: {field}: rotation is a reflection (det = {determinant:.3f}); axes flipped?")
    return matrix


def read_cameras(path: Path | str) -> list[Frame]:
    """Read and validate ``opencv_cameras.json``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read ({error.strerror})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, dict) or "frames" not in document:
        raise DataFormatError(f"{path}: frames: missing (expected an object with a 'frames' list)")
    frames_raw = document["frames"]
    if not isinstance(frames_raw, list) or not frames_raw:
        raise DataFormatError(f"{path}: frames: expected a non-empty list")
    frames = []
    for index, raw in enumerate(frames_raw):
        where = f"frames[{index}]"
        if not isinstance(raw, dict):
            raise DataFormatError(f"{path}: {where}: expected an object")
        for key in FRAME_KEYS:
            if key not in raw:
                raise DataFormatError(f"{path}: {where}.{key}: missing")
        width = _number(path, f"{where}.w", raw["w"], positive=True)
        height = _number(path, f"{where}.h", raw["h"], positive=True)
        if width != int(width) or height != int(height):
            raise DataFormatError(f"{path}: {where}.w/h: must be whole pixels, got {raw['w']}x{raw['h']}")
        intrinsics = [
            _number(path, f"{where}.{k}", raw[k], positive=k in ("fx", "fy")) for k in ("fx", "fy", "cx", "cy")
        ]
        if not isinstance(raw["file_path"], str) or not raw["file_path"]:
            raise DataFormatError(f"{path}: {where}.file_path: expected a non-empty string")
        frames.append(
            Frame(
                file_path=raw["file_path"],
                width=int(width),
                height=int(height),
                fxfycxcy=np.asarray(intrinsics, dtype=np.float64),
                w2c=_w2c(path, f"{where}.w2c", raw["w2c"]),
            )
        )
    return frames


def write_cameras(path: Path | str, frames: list[Frame], sample_id: str, extra: dict | None = None) -> None:
    document = {
        "id": sample_id,
        "frames": [
            {
                "w": frame.width,
                "h": frame.height,
                "fx": float(frame.fxfycxcy[0]),
                "fy": float(frame.fxfycxcy[1]),
                "cx": float(frame.fxfycxcy[2]),
                "cy": float(frame.fxfycxcy[3]),
                "w2c": np.asarray(frame.w2c, dtype=np.float64).tolist(),
                "file_path": frame.file_path,
            }
            for frame in frames
        ],
    }
    if extra:
        document.update(extra)
    Path(path).write_text(json.dumps(document, indent=1))


def read_split(root: Path, split_file: Path) -> list[Path]:
    """Sample folders listed in a split file: names relative to ``root`` or FaceLift-style absolute paths."""
    if not split_file.is_file():
        raise DataFormatError(f"{split_file}: split file not found (expected one sample folder per line)")
    samples = []
    for line in split_file.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        candidate = Path(entry)
        samples.append(candidate if candidate.is_absolute() else root / candidate)
    if not samples:
        raise DataFormatError(f"{split_file}: no samples listed")
    return samples
