"""MAMMAL / markerless-mouse layout (the rig this trainer is built for).

```
SRC/new_cam.pkl                    list of per-camera dicts: K (3x3), R (3x3), T (3 or 3x1, mm); x_cam = R X + T
SRC/videos_undist/{0..N-1}.mp4     one undistorted video per camera (1152x1024, 100 fps on the real rig)
SRC/simpleclick_undist/{k}.mp4     optional mask videos, or folders {k}/ of mask images named by frame number
```

The videos are already undistorted, so any distortion stored in the pickle is ignored (and said so in import_info).
The calibration states no image size: a video whose size puts the principal point outside the frame is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from gslrm.data.format import DataFormatError
from gslrm.data.recordings.camera import RigCamera, checked_intrinsics, checked_matrix, checked_rotation
from gslrm.data.recordings.source import Recording, find_masks, videos_in
from gslrm.data.recordings.video import VideoSource

__all__ = ["read", "write_calibration", "CALIBRATION", "VIDEOS", "MASKS"]

CALIBRATION, VIDEOS, MASKS = "new_cam.pkl", "videos_undist", "simpleclick_undist"


class _ArraysOnly(pickle.Unpickler):
    """Unpickles lists, dicts and numpy arrays only: a calibration file has no reason to run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays, lists and dicts are expected)")


def _load(path: Path) -> list:
    try:
        with path.open("rb") as handle:
            document = _ArraysOnly(handle, encoding="latin1").load()  # latin1: pickles written by Python 2 numpy
    except FileNotFoundError:
        raise DataFormatError(f"{path}: calibration file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataFormatError(f"{path}: not a readable calibration pickle ({error})") from None
    if isinstance(document, dict) and all(isinstance(key, int) for key in document):
        document = [document[key] for key in sorted(document)]
    if not isinstance(document, list | tuple) or not document:
        raise DataFormatError(f"{path}: expected a non-empty list of per-camera dicts, got {type(document).__name__}")
    return list(document)


def read_calibration(path: Path) -> list[RigCamera]:
    cameras = []
    for index, entry in enumerate(_load(path)):
        where = f"{path}: [{index}]"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{where}: expected a dict with K, R, T, got {type(entry).__name__}")
        for key in ("K", "R", "T"):
            if key not in entry:
                raise DataFormatError(f"{where}.{key}: missing")
        cameras.append(
            RigCamera(
                name=str(index),
                K=checked_intrinsics(f"{where}.K", entry["K"]),
                R=checked_rotation(f"{where}.R", entry["R"]),
                t=checked_matrix(f"{where}.T", entry["T"], (3,)),
                dist=np.zeros(5),
            )
        )
    return cameras


def write_calibration(path: Path, cameras: list[RigCamera]) -> None:
    entries = [{"K": c.K.copy(), "R": c.R.copy(), "T": c.t.reshape(3, 1).copy()} for c in cameras]
    path.write_bytes(pickle.dumps(entries, protocol=4))


def read(src: Path, masks: Path | None = None) -> Recording:
    calibration = src / CALIBRATION
    cameras = read_calibration(calibration)
    video_dir = src / VIDEOS
    if not video_dir.is_dir():
        raise DataFormatError(f"{video_dir}: video folder not found (expected {VIDEOS}/0.mp4 ...)")
    found = {path.stem: path for path in videos_in(video_dir)}
    for stem, path in found.items():
        if not (stem.isdigit() and int(stem) < len(cameras)):
            raise DataFormatError(
                f"{path}: a video with no camera in {calibration} ({len(cameras)} cameras: 0..{len(cameras) - 1})"
            )
    videos = []
    for index in range(len(cameras)):
        if str(index) not in found:
            raise DataFormatError(f"{video_dir / f'{index}.mp4'}: video for camera {index} of {calibration} not found")
        videos.append(VideoSource.single(found[str(index)]))
    return Recording(
        format="mammal",
        calibration=calibration,
        cameras=cameras,
        videos=videos,
        masks=find_masks(src, masks, MASKS, [str(i) for i in range(len(cameras))]),
        pixel_convention="opencv",
        units="mm",
        notes=["videos are undistorted by the rig's pipeline; no distortion applied"],
    )
