"""DANNCE / Label3D: MATLAB calibrations and ``videos/Camera{N}/`` folders.

```
SRC/calibration/hires_cam{N}_params.mat   N from 1; variables K, r, t, RDistort, TDistort
  or SRC/label3d_dannce.mat               params: a cell array of structs with the same fields (camnames: names)
                                          either in MATLAB's v7 format or v7.3 (HDF5, what save -v7.3 and large
                                          Label3D sessions write; read with mat73, as DANNCE itself does)
SRC/videos/Camera{N}/0.mp4                one video per camera, or chunks named by their first frame (0, 3000, ...)
SRC/masks/                                optional: per camera Camera{N}.mp4 or a folder Camera{N}/ of mask images
```

MATLAB multiplies row vectors: a point projects as ``[X 1] [r; t] K``, so ``K`` and ``r`` are the transposes of
OpenCV's K and R, ``t`` is a row vector, and pixel coordinates are 1-based (the first pixel's centre is (1, 1)).
``RDistort`` holds the radial coefficients (k1 k2 [k3]) and ``TDistort`` the tangential ones (p1 p2), the same
model as OpenCV's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gslrm.data.format import DataFormatError
from gslrm.data.recordings.camera import (
    MATLAB_MINUS_OPENCV,
    RigCamera,
    checked_intrinsics,
    checked_matrix,
    checked_rotation,
    distortion,
)
from gslrm.data.recordings.source import Recording, find_masks, videos_in
from gslrm.data.recordings.video import VideoSource

__all__ = ["read", "hires_variables", "label3d_variables", "write_hires", "write_label3d", "LABEL3D"]

LABEL3D = "label3d_dannce.mat"
FIELDS = ("K", "r", "t", "RDistort", "TDistort")


def _loadmat(path: Path, variables: list[str] | None = None) -> dict:
    """The file's variables (only ``variables`` when given: a Label3D file also holds every label and sync table)."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path), simplify_cells=True, variable_names=variables)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: calibration file not found") from None
    except NotImplementedError:  # scipy reads up to v7; v7.3 is HDF5
        return _loadmat_v73(path, variables)
    except (ValueError, TypeError, OSError) as error:
        raise DataFormatError(f"{path}: not a readable MATLAB file ({error})") from None


def _loadmat_v73(path: Path, variables: list[str] | None) -> dict:
    """A v7.3 file through mat73: structs come back as dicts, cells as (nested) lists, arrays in MATLAB's shape. All
    of it: mat73's ``only_include`` also drops what cells reference (measured: params{1}.K came back empty)."""
    import mat73

    try:
        document = mat73.loadmat(str(path), verbose=False)
        return document if variables is None else {k: v for k, v in document.items() if k in variables}
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise DataFormatError(f"{path}: not a readable MATLAB v7.3 file ({error})") from None


def _cells(value: object) -> list:
    """A MATLAB cell array's elements in order, whatever nesting the reader gave its N x 1 or 1 x N shape (scipy:
    an object array or list; mat73: a list of one-element lists); a lone element counts as a cell of one."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.reshape(-1).tolist()
    if not isinstance(value, list):
        return [value]
    return [leaf for element in value for leaf in _cells(element)]


def _camera(where: str, name: str, fields: object) -> RigCamera:
    if not isinstance(fields, dict):
        raise DataFormatError(f"{where}: expected a struct with {', '.join(FIELDS)}")
    for key in ("K", "r", "t"):
        if key not in fields:
            raise DataFormatError(f"{where}.{key}: missing")
    K_matlab = checked_matrix(f"{where}.K", fields["K"], (3, 3))
    if np.abs(K_matlab[0, 1:]).max() > 0 or abs(K_matlab[1, 2]) > 0:
        raise DataFormatError(
            f"{where}.K: expected MATLAB's transposed form [[fx, 0, 0], [s, fy, 0], [cx, cy, 1]], got {K_matlab.tolist()}"
        )
    K = checked_intrinsics(f"{where}.K", K_matlab.T)
    K[:2, 2] -= MATLAB_MINUS_OPENCV
    return RigCamera(
        name=name,
        K=K,
        R=checked_rotation(f"{where}.r", checked_matrix(f"{where}.r", fields["r"], (3, 3)).T),
        t=checked_matrix(f"{where}.t", fields["t"], (3,)),
        dist=distortion(f"{where}.RDistort/TDistort", fields.get("RDistort", ()), fields.get("TDistort", ())),
    )


def hires_variables(camera: RigCamera) -> dict:
    """The variables of one ``hires_cam{N}_params.mat`` (also one struct of Label3D's ``params``)."""
    K = camera.K.copy()
    K[:2, 2] += MATLAB_MINUS_OPENCV
    k1, k2, p1, p2, k3 = camera.standard_distortion()
    return {
        "K": K.T,
        "r": camera.R.T,
        "t": camera.t.reshape(1, 3),
        "RDistort": np.array([[k1, k2, k3]]),
        "TDistort": np.array([[p1, p2]]),
    }


def label3d_variables(cameras: list[RigCamera]) -> dict:
    """The calibration variables of ``label3d_dannce.mat``: ``params`` (N x 1 cell of structs), ``camnames`` (1 x N)."""
    params = np.empty((len(cameras), 1), dtype=object)
    names = np.empty((1, len(cameras)), dtype=object)
    for index, camera in enumerate(cameras):
        params[index, 0] = hires_variables(camera)
        names[0, index] = camera.name
    return {"params": params, "camnames": names}


def write_hires(src: Path, cameras: list[RigCamera]) -> None:
    from scipy.io import savemat

    (src / "calibration").mkdir(parents=True, exist_ok=True)
    for index, camera in enumerate(cameras):
        savemat(str(src / "calibration" / f"hires_cam{index + 1}_params.mat"), hires_variables(camera))


def write_label3d(src: Path, cameras: list[RigCamera]) -> None:
    from scipy.io import savemat

    savemat(str(src / LABEL3D), label3d_variables(cameras))


def read_calibration(src: Path) -> tuple[Path, list[RigCamera]]:
    hires = src / "calibration"
    if hires.is_dir() and any(hires.glob("hires_cam*_params.mat")):
        files = {
            int(m.group(1)): p
            for p in hires.glob("hires_cam*_params.mat")
            if (m := re.fullmatch(r"hires_cam(\d+)_params", p.stem))
        }
        numbers = sorted(files)
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
            raise DataFormatError(
                f"{hires}: camera {missing[0]}: hires_cam{missing[0]}_params.mat missing (cameras count from 1)"
            )
        return hires, [_camera(str(files[n]), f"Camera{n}", _loadmat(files[n])) for n in numbers]
    label3d = src / LABEL3D
    if not label3d.is_file():
        raise DataFormatError(f"{src}: no calibration (expected calibration/hires_cam1_params.mat ... or {LABEL3D})")
    document = _loadmat(label3d, ["params", "camnames"])
    if "params" not in document:
        raise DataFormatError(f"{label3d}: params: missing (expected a cell array of camera structs)")
    params = _cells(document["params"])
    names = [str(n) for n in _cells(document["camnames"])] if document.get("camnames") is not None else None
    if names is not None and len(names) != len(params):
        raise DataFormatError(f"{label3d}: camnames: {len(names)} names for {len(params)} cameras in params")
    names = names or [f"Camera{i + 1}" for i in range(len(params))]
    return label3d, [_camera(f"{label3d}: params{{{i + 1}}}", names[i], p) for i, p in enumerate(params)]


def _chunks(folder: Path) -> VideoSource:
    files = videos_in(folder)
    if not files:
        raise DataFormatError(f"{folder}: no video (expected {folder}/0.mp4)")
    starts = []
    for path in files:
        if not path.stem.isdigit():
            raise DataFormatError(f"{path}: video chunks are named by their first frame (0.mp4, 3000.mp4, ...)")
        starts.append(int(path.stem))
    order = np.argsort(starts)
    if starts[order[0]] != 0:
        raise DataFormatError(f"{folder}: the first video chunk must be 0.mp4, found {files[order[0]].name}")
    return VideoSource(tuple((starts[i], files[i]) for i in order))


def read(src: Path, masks: Path | None = None) -> Recording:
    calibration, cameras = read_calibration(src)
    video_root = src / "videos"
    if not video_root.is_dir():
        raise DataFormatError(f"{video_root}: video folder not found (expected videos/Camera1/0.mp4 ...)")
    names = [camera.name for camera in cameras]
    for folder in sorted(p for p in video_root.iterdir() if p.is_dir()):
        if folder.name not in names:
            raise DataFormatError(f"{folder}: a video with no camera in {calibration} (cameras: {', '.join(names)})")
    videos = []
    for name in names:
        if not (video_root / name).is_dir():
            raise DataFormatError(f"{video_root / name}: video for camera {name} of {calibration} not found")
        videos.append(_chunks(video_root / name))
    return Recording(
        format="dannce",
        calibration=calibration,
        cameras=cameras,
        videos=videos,
        masks=find_masks(src, masks, "masks", names),
        pixel_convention="matlab",
        units="mm",
        notes=["MATLAB row-vector calibration: K and r transposed, 1-based pixels (cx, cy - 1 for OpenCV)"],
    )
