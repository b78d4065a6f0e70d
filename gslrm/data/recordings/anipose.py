"""anipose: ``calibration.toml`` and one video per camera, matched by camera name.

```
SRC/calibration.toml       [cam_N] tables: name, size = [w, h], matrix (K), distortions (OpenCV's k1 k2 p1 p2 k3),
                           rotation (Rodrigues vector, world -> camera), translation; x_cam = R X + t;
                           fisheye = true: distortions are OpenCV's fisheye k1 k2 k3 k4 (aniposelib's FisheyeCamera)
SRC/videos-raw/*.mp4       (or SRC/*.mp4) one video per camera; "<session>-cam<name>.mp4", "<name>.mp4" ...
SRC/masks/                 optional: per camera <video stem>.mp4 or a folder <video stem>/ of mask images
SRC/config.toml            optional (or in a folder above SRC, the nearest wins, as anipose nests them):
                           [triangulation] cam_regex, the regex whose first group is a video's camera name
```

Videos are matched to cameras as anipose does when a ``cam_regex`` is given (``--cam-regex``, else the project's
``config.toml``): ``re.search(cam_regex, stem).group(1).strip()`` is the camera's name. Without one, a video
matches camera ``A`` when its stem is ``A`` or ends in ``-camA``/``_camA``/``camA``/``-A`` (anipose's default regex
``-cam([A-Z])$`` is one of those).

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
)
from gslrm.data.recordings.source import Recording, find_masks, videos_in
from gslrm.data.recordings.video import VideoSource

__all__ = ["read", "write_calibration", "video_name", "find_cam_regex", "CALIBRATION", "CONFIG"]

CALIBRATION = "calibration.toml"
CONFIG = "config.toml"  # the anipose project's; only [triangulation] cam_regex is read
CONFIG_LEVELS = 4  # SRC and up to 3 folders above it (anipose projects nest sessions under the project root)


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
        dist = distortion(
            f"{where}.distortions",
            coefficients[[0, 1, 4]] if coefficients.size == 5 else coefficients[:2],
            coefficients[2:4],
        )
    else:
        raise DataFormatError(f"{where}.distortions: expected OpenCV's 5 (or 4) coefficients, got {coefficients.size}")
    rotation_vector = checked_matrix(f"{where}.rotation", entry["rotation"], (3,))
    return RigCamera(
        name=str(entry["name"]),
        K=K,
        R=cv2.Rodrigues(rotation_vector)[0],
        t=checked_matrix(f"{where}.translation", entry["translation"], (3,)),
        dist=dist,
        size=(int(size[0]), int(size[1])),
        fisheye=fisheye,
    )


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
            f"[cam_{index}]",
            f'name = "{camera.name}"',
            f"size = [{camera.size[0]}, {camera.size[1]}]",
            f"matrix = {_toml_list(camera.K.tolist())}",
            f"distortions = {_toml_list(camera.dist.tolist())}",
            f"rotation = {_toml_list(cv2.Rodrigues(camera.R)[0].reshape(3).tolist())}",
            f"translation = {_toml_list(camera.t.tolist())}",
            *(["fisheye = true"] if camera.fisheye else []),
            "",
        ]
    lines += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    path.write_text("\n".join(lines))


def video_name(session: str, camera: str) -> str:
    """anipose's default naming, ``<session>-cam<name>`` (its cam_regex ``-cam([A-Z])``)."""
    return f"{session}-cam{camera}"


def _matches(stem: str, name: str) -> bool:
    escaped = re.escape(name)
    return stem == name or re.search(rf"(?:^|[-_. ])(?:cam[-_]?)?{escaped}$|cam[-_]?{escaped}$", stem, re.I) is not None


def find_cam_regex(src: Path) -> tuple[str, Path] | None:
    """``[triangulation] cam_regex`` of the nearest anipose ``config.toml`` at or above ``src``, and that file."""
    for folder in [src.resolve(), *src.resolve().parents][:CONFIG_LEVELS]:
        path = folder / CONFIG
        if not path.is_file():
            continue
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise DataFormatError(f"{path}: invalid TOML ({error})") from None
        regex = document.get("triangulation", {}).get("cam_regex") if isinstance(document, dict) else None
        if regex is not None:
            if not isinstance(regex, str):
                raise DataFormatError(f"{path}: triangulation.cam_regex: expected a string, got {regex!r}")
            return regex, path
    return None


def _camera_names(found: list[Path], regex: str, where: str) -> dict[Path, str]:
    """anipose's rule: the first group of ``re.search(regex, stem)``, stripped; a video it misses is an error."""
    try:
        pattern = re.compile(regex)
    except re.error as error:
        raise DataFormatError(f"{where}: cam_regex {regex!r} is not a regular expression ({error})") from None
    if pattern.groups < 1:
        raise DataFormatError(f"{where}: cam_regex {regex!r} has no group to take the camera name from")
    names = {}
    for path in found:
        match = pattern.search(path.stem)
        if match is None or match.group(1) is None:
            raise DataFormatError(f"{path}: the video's name does not match cam_regex {regex!r} ({where})")
        names[path] = match.group(1).strip()
    return names


def read(src: Path, masks: Path | None = None, cam_regex: str | None = None) -> Recording:
    """The recording in ``src``; ``cam_regex`` (default: the project's config.toml) names each video's camera."""
    calibration = src / CALIBRATION
    cameras = read_calibration(calibration)
    video_dir = src / "videos-raw" if (src / "videos-raw").is_dir() else src
    found = videos_in(video_dir)
    configured = (cam_regex, "--cam-regex") if cam_regex is not None else find_cam_regex(src)
    names = _camera_names(found, configured[0], str(configured[1])) if configured else None
    videos = []
    for camera in cameras:
        if names is not None:
            hits = [path for path in found if names[path] == camera.name]
        else:
            hits = [path for path in found if _matches(path.stem, camera.name)]
        if not hits:
            rule = (
                f"cam_regex {configured[0]!r} ({configured[1]})"
                if configured
                else "e.g. " + video_name("session", camera.name) + ".mp4"
            )
            raise DataFormatError(f"{video_dir}: no video for camera {camera.name!r} of {calibration} ({rule})")
        if len(hits) > 1:
            raise DataFormatError(f"{video_dir}: several videos for camera {camera.name!r}: {[p.name for p in hits]}")
        videos.append(hits[0])
    for path in found:
        if path not in videos:
            named = f" (camera {names[path]!r} by cam_regex {configured[0]!r})" if names is not None else ""
            raise DataFormatError(
                f"{path}: a video with no camera in {calibration}{named} (cameras: {', '.join(c.name for c in cameras)})"
            )
    return Recording(
        format="anipose",
        calibration=calibration,
        cameras=cameras,
        videos=[VideoSource.single(v) for v in videos],
        masks=find_masks(src, masks, "masks", [v.stem for v in videos]),
        pixel_convention="opencv",
    )
