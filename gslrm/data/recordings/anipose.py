"""anipose: ``calibration.toml`` and one video per camera, matched by camera name.

```
SRC/calibration.toml       [cam_N] tables: name, size = [w, h], matrix (K), distortions (OpenCV's k1 k2 p1 p2 k3),
                           rotation (Rodrigues vector, world -> camera), translation; x_cam = R X + t;
                           fisheye = true: distortions are OpenCV's fisheye k1 k2 k3 k4 (aniposelib's FisheyeCamera)
SRC/videos-raw/*.mp4       (or SRC/*.mp4) one video per camera; "<session>-cam<name>.mp4", "<name>.mp4" ...
SRC/masks/                 optional: per camera <video stem>.mp4 or a folder <video stem>/ of mask images
```

The frames are distorted: the importer undistorts images and masks to the pinhole camera with the same K (for a
fisheye lens that pinhole image holds the centre of the field of view; the periphery beyond it is dropped).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np

from gslrm.data.format import DataFormatError
from gslrm.data.recordings.camera import (
    RigCamera,
    checked_intrinsics,
    checked_matrix,
    distortion,
    fisheye_distortion,
)  # fmt: skip
from gslrm.data.recordings.source import Recording, find_masks, videos_in
from gslrm.data.recordings.video import VideoSource

__all__ = ["read", "write_calibration", "video_name", "CALIBRATION"]

CALIBRATION = "calibration.toml"


def _camera(path: Path, table: str, entry: object) -> RigCamera:
    import cv2

    where = f"{path}: [{table}]"
    if not isinstance(entry, dict):
        raise DataFormatError(f"{where}: expected a table")
    for key in ("name", "size", "matrix", "distortions", "rotation", "translation"):
        if key not in entry:
            raise DataFormatError(f"{where}.{key}: missing")
    fisheye = entry.get("fisheye", False)
    if not isinstance(fisheye, bool):
        raise DataFormatError(f"{where}.fisheye: expected true or false, got {fisheye!r}")
    size = checked_matrix(f"{where}.size", entry["size"], (2,))
    if (size <= 0).any() or (size != np.round(size)).any():
        raise DataFormatError(f"{where}.size: expected [width, height] in whole pixels, got {entry['size']}")
    K = checked_intrinsics(f"{where}.matrix", entry["matrix"])
    try:
        coefficients = np.asarray(entry["distortions"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DataFormatError(f"{where}.distortions: not a list of numbers ({error})") from None
    if fisheye:
        dist = fisheye_distortion(f"{where}.distortions", coefficients)
        if K[0, 1] != 0.0:  # OpenCV's fisheye undistortion maps ignore K's skew term
            raise DataFormatError(f"{where}.matrix: a fisheye camera with skew ({K[0, 1]:g}) is not supported")
    elif coefficients.size in (4, 5):
        dist = distortion(f"{where}.distortions", coefficients[[0, 1, 4]] if coefficients.size == 5 else coefficients[:2],
                          coefficients[2:4])  # fmt: skip
    else:
        raise DataFormatError(f"{where}.distortions: expected OpenCV's 5 (or 4) coefficients, got {coefficients.size}")
    rotation_vector = checked_matrix(f"{where}.rotation", entry["rotation"], (3,))
    return RigCamera(
        name=str(entry["name"]), K=K, R=cv2.Rodrigues(rotation_vector)[0],
        t=checked_matrix(f"{where}.translation", entry["translation"], (3,)), dist=dist,
        size=(int(size[0]), int(size[1])), fisheye=fisheye,
    )  # fmt: skip


def read_calibration(path: Path) -> list[RigCamera]:
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{path}: calibration file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise DataFormatError(f"{path}: invalid TOML ({error})") from None
    tables = sorted((key for key in document if re.fullmatch(r"cam_\d+", key)), key=lambda key: int(key[4:]))
    if not tables:
        raise DataFormatError(f"{path}: no [cam_N] tables")
    cameras = [_camera(path, table, document[table]) for table in tables]
    names = [camera.name for camera in cameras]
    if len(set(names)) != len(names):
        raise DataFormatError(f"{path}: name: camera names repeat ({names})")
    return cameras


def _toml_list(values) -> str:
    return "[" + ", ".join(_toml_list(v) if isinstance(v, list) else repr(float(v)) for v in values) + "]"


def write_calibration(path: Path, cameras: list[RigCamera]) -> None:
    import cv2

    lines = []
    for index, camera in enumerate(cameras):
        lines += [
            f"[cam_{index}]", f'name = "{camera.name}"', f"size = [{camera.size[0]}, {camera.size[1]}]",
            f"matrix = {_toml_list(camera.K.tolist())}", f"distortions = {_toml_list(camera.dist.tolist())}",
            f"rotation = {_toml_list(cv2.Rodrigues(camera.R)[0].reshape(3).tolist())}",
            f"translation = {_toml_list(camera.t.tolist())}", *(["fisheye = true"] if camera.fisheye else []), "",
        ]  # fmt: skip
    lines += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    path.write_text("\n".join(lines))


def video_name(session: str, camera: str) -> str:
    """anipose's default naming, ``<session>-cam<name>`` (its cam_regex ``-cam([A-Z])``)."""
    return f"{session}-cam{camera}"


def _matches(stem: str, name: str) -> bool:
    escaped = re.escape(name)
    return stem == name or re.search(rf"(?:^|[-_. ])(?:cam[-_]?)?{escaped}$|cam[-_]?{escaped}$", stem, re.I) is not None


def read(src: Path, masks: Path | None = None) -> Recording:
    calibration = src / CALIBRATION
    cameras = read_calibration(calibration)
    video_dir = src / "videos-raw" if (src / "videos-raw").is_dir() else src
    found = videos_in(video_dir)
    videos = []
    for camera in cameras:
        hits = [path for path in found if _matches(path.stem, camera.name)]
        if not hits:
            raise DataFormatError(
                f"{video_dir}: no video for camera {camera.name!r} of {calibration} "
                f"(expected e.g. {video_name('session', camera.name)}.mp4)"
            )
        if len(hits) > 1:
            raise DataFormatError(f"{video_dir}: several videos for camera {camera.name!r}: {[p.name for p in hits]}")
        videos.append(hits[0])
    for path in found:
        if path not in videos:
            raise DataFormatError(
                f"{path}: a video with no camera in {calibration} (cameras: {', '.join(c.name for c in cameras)})"
            )
    return Recording(
        format="anipose", calibration=calibration, cameras=cameras, videos=[VideoSource.single(v) for v in videos],
        masks=find_masks(src, masks, "masks", [v.stem for v in videos]), pixel_convention="opencv",
    )  # fmt: skip
