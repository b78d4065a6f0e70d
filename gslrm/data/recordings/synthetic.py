"""A rodent recording: the default dataset's animal moving through changing poses in front of its 6-camera rig,
written as each rig format writes it (videos through the H.264 encoder, calibrations in each convention, masks).

    python -m gslrm.data record --out DIR [--formats mammal,anipose,dannce,anipose_fisheye] [--frames 24]
                                [--size 1152x1024]

``DIR/<format>/`` is then a recording to import; ``DIR/ground_truth/`` holds the exact pinhole cameras
(``cameras.json``, gslrm's format, millimetres), ``animal.csv`` (the animal's centre of mass per frame, mm: the
truth predict.py's centroids are checked against) and, with ``--depth``, each view's z-depth (mm) of every frame,
which the tests use to check the import by reprojection. anipose frames and masks are distorted (OpenCV's model, non-zero
k1, k2, p1, p2) so the importer has to undistort them; ``anipose_fisheye`` is an anipose recording through fisheye
lenses (OpenCV's fisheye model, ``fisheye = true``); MAMMAL's videos are undistorted, as the real rig's are.
DANNCE and anipose cameras carry a skew K[0, 1] per camera, as a real rig's MATLAB calibration did (-5.9 to +1.4 px
at 1152 px, scaled with the width), so their frames are sheared and the importer has to remove it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from gslrm.data.format import Frame, write_cameras
from gslrm.data.recordings import anipose, dannce, mammal
from gslrm.data.recordings.camera import RigCamera, pinhole_positions
from gslrm.data.recordings.video import VideoWriter

__all__ = ["MM_PER_UNIT", "RECORDINGS", "record", "rig_distortion", "rig_fisheye_distortion", "rig_skew"]

MM_PER_UNIT = 170.0  # the rodent dataset's unit is its body length, 0.17 m
KEYFRAME_EVERY = 8  # frames between random key poses; poses in between are eased
# frames through a lens (distortion or skew) are rendered at this many times the video's size, resampled through it
# and area-averaged down: the recorded silhouette then has the sub-pixel edges a real sensor gives, so a sub-pixel
# error of the importer (a skew of a few pixels shears a frame by < 1 px) moves the thresholded mask; a mask
# resampled at the video's size would snap back to the pinhole one when thresholded
SUPERSAMPLE = 2
# what --formats can ask for -> (the rig format it is written in, its camera names, its lenses, skewed K)
RECORDINGS = {
    "mammal": ("mammal", [str(k) for k in range(6)], "pinhole", False),
    "anipose": ("anipose", list("ABCDEF"), "standard", True),
    "dannce": ("dannce", [f"Camera{k + 1}" for k in range(6)], "pinhole", True),
    "anipose_fisheye": ("anipose", list("ABCDEF"), "fisheye", False),  # a fisheye with skew is refused
}
RIG_SKEW_PX = (-5.9, -5.8, -4.9, -1.3, -0.9, 1.4)  # K[0, 1] of a real 1152x1024 rig's MATLAB calibration


def rig_distortion(camera: int) -> np.ndarray:
    """OpenCV (k1, k2, p1, p2, k3) of a modest lens, a little different per camera: ~6 px at a 1152 px corner."""
    return np.array([-0.12 + 0.01 * camera, 0.04, 0.0012, -0.0008, 0.0])


def rig_skew(camera: int, width: int) -> float:
    """K[0, 1] of ``camera`` in a ``width``-pixel-wide frame: the real rig's skew, scaled like the focal length."""
    return RIG_SKEW_PX[camera] * width / 1152.0


def rig_fisheye_distortion(camera: int) -> np.ndarray:
    """OpenCV fisheye (k1, k2, k3, k4), a little different per camera: a 1152x1024 frame's corner lies 56-61 px
    inside where a pinhole lens with the same K would put it (mostly the equidistant projection itself)."""
    return np.array([0.03 - 0.005 * camera, -0.01, 0.002, 0.0])


def _distortion_maps(camera: RigCamera, width: int, height: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """For every sub-pixel of the recorded frame (``factor`` x its size), where it lies in the pinhole image
    rendered at ``factor`` x the size (OpenCV's pixel centres: x_fine = (x + 0.5) factor - 0.5)."""
    fine = np.stack(np.meshgrid(np.arange(width * factor), np.arange(height * factor)), -1).reshape(-1, 2)
    pinhole = pinhole_positions(camera, (fine + 0.5) / factor - 0.5)
    pinhole = ((pinhole + 0.5) * factor - 0.5).reshape(height * factor, width * factor, 2)
    return pinhole[..., 0].astype(np.float32), pinhole[..., 1].astype(np.float32)


class _FormatWriter:
    """Videos, masks and calibration of one format."""

    def __init__(self, root: Path, format: str, cameras: list[RigCamera], fps: int, stack: ExitStack) -> None:
        self.format, self.cameras = format, cameras
        names = [camera.name for camera in cameras]
        if format == "mammal":
            videos = [root / mammal.VIDEOS / f"{n}.mp4" for n in names]
            masks = [root / mammal.MASKS / f"{n}.mp4" for n in names]
        elif format == "anipose":
            videos = [root / "videos-raw" / f"{anipose.video_name('rec', n)}.mp4" for n in names]
            masks = [root / "masks" / f"{anipose.video_name('rec', n)}.mp4" for n in names]
        else:
            videos = [root / "videos" / n / "0.mp4" for n in names]
            masks = [root / "masks" / f"{n}.mp4" for n in names]
        for path in videos + masks:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.videos = [stack.enter_context(VideoWriter(p, fps)) for p in videos]
        self.masks = [stack.enter_context(VideoWriter(p, fps)) for p in masks]
        self.maps = [_distortion_maps(c, *c.size, SUPERSAMPLE) if not c.is_pinhole else None for c in cameras]
        if format == "mammal":
            mammal.write_calibration(root / mammal.CALIBRATION, cameras)
        elif format == "anipose":
            anipose.write_calibration(root / anipose.CALIBRATION, cameras)
        else:
            dannce.write_hires(root, cameras)
            dannce.write_label3d(root, cameras)  # both DANNCE calibration forms; the importer prefers calibration/

    def write(self, camera: int, views: dict[bool, tuple[np.ndarray, np.ndarray]]) -> None:
        """``views[fine]``: the pinhole view's RGB and mask at the video's size (False) and at SUPERSAMPLE x it (True).
        A pinhole camera records the first as it is; any other resamples the second through its lens, then
        area-averages it down to the video's size."""
        import cv2

        if self.maps[camera] is None:
            rgb, mask = views[False]
        else:
            rgb, mask = views[True]
            rgb = cv2.remap(rgb, *self.maps[camera], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mask = cv2.remap(mask, *self.maps[camera], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            size = self.cameras[camera].size
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        self.videos[camera].write(rgb)
        self.masks[camera].write(mask)


def _mask(depth: np.ndarray) -> np.ndarray:
    return np.where(depth > 0, 255, 0).astype(np.uint8)


def _eased(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    weight = 0.5 - 0.5 * math.cos(math.pi * fraction)
    return (1.0 - weight) * a + weight * b


def record(
    out: Path,
    formats: tuple[str, ...] = ("mammal", "anipose", "dannce"),
    frames: int = 24,
    width: int = 1152,
    height: int = 1024,
    seed: int = 0,
    fps: int = 100,
    depth: bool = False,
) -> None:
    """Render ``frames`` frames of a moving rodent and write them as each format (see the module docstring)."""
    from tqdm import tqdm

    from gslrm.data.rodent import COATS, RodentConfig, RodentScene, rig_cameras

    if width % 2 or height % 2:
        raise ValueError(f"--size {width}x{height}: H.264 (yuv420p) needs even sizes")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    c2w, intrinsics = rig_cameras(width, height)
    w2c = np.linalg.inv(c2w)
    w2c[:, :3, 3] *= MM_PER_UNIT  # millimetres, as MAMMAL and DANNCE calibrations are
    truth = out / "ground_truth"
    (truth / "depth").mkdir(parents=True, exist_ok=True)
    frames_gt = [Frame(f"cam_{k:03d}", width, height, intrinsics[k], w2c[k]) for k in range(len(w2c))]
    write_cameras(truth / "cameras.json", frames_gt, "ground_truth", extra={"units": "mm", "recorded_frames": frames})
    rng = np.random.default_rng(seed)
    scene = RodentScene(width, height, supersample=SUPERSAMPLE)
    config = RodentConfig(offset=0.06)
    keys = [scene.random_pose(rng, config) for _ in range(frames // KEYFRAME_EVERY + 2)]
    coat = np.asarray(COATS[2])
    animal = []  # per frame: the animal's centre of mass in the calibration's world frame (mm)
    try:
        with ExitStack() as stack:
            writers = []
            lenses = {"pinhole": lambda k: None, "standard": rig_distortion, "fisheye": rig_fisheye_distortion}
            for kind in formats:
                format, names, lens, skewed = RECORDINGS[kind]
                cameras = [
                    RigCamera.from_gslrm(
                        name,
                        intrinsics[k],
                        w2c[k],
                        (width, height),
                        lenses[lens](k),
                        lens == "fisheye",
                        skew=rig_skew(k, width) if skewed else 0.0,
                    )
                    for k, name in enumerate(names)
                ]
                writers.append(_FormatWriter(out / kind, format, cameras, fps, stack))
            for index in tqdm(range(frames), desc="recording rodent frames"):
                key, fraction = divmod(index, KEYFRAME_EVERY)
                (j0, y0, o0), (j1, y1, o1) = keys[key], keys[key + 1]
                t = fraction / KEYFRAME_EVERY
                yaw = y0 + t * math.remainder(y1 - y0, 2 * math.pi)
                scene.place(_eased(j0, j1, t), yaw, _eased(o0, o1, t), coat)
                animal.append([index, *(scene.centre_of_mass_m() * 1000.0)])  # MuJoCo's metres = the rig's frame
                for camera in range(len(w2c)):
                    rgb, z = scene.render(camera)  # z: the ground truth's depth, at the video's size
                    views = {False: (rgb, _mask(z))}
                    if any(writer.maps[camera] is not None for writer in writers):  # a lens to record through
                        fine_rgb, fine_z = scene.render(camera, fine=True)
                        views[True] = (fine_rgb, _mask(fine_z))
                    for writer in writers:
                        writer.write(camera, views)
                    if depth:
                        np.save(
                            truth / "depth" / f"frame_{index:06d}_cam_{camera:03d}.npy",
                            (z * MM_PER_UNIT).astype(np.float32),
                        )
    finally:
        scene.close()
    np.savetxt(
        truth / "animal.csv",
        np.asarray(animal),
        fmt=["%d", "%.4f", "%.4f", "%.4f"],
        delimiter=",",
        header="frame,com_x_mm,com_y_mm,com_z_mm",
        comments="",
    )
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "generator": "gslrm.data.recordings.synthetic",
                "formats": list(formats),
                "frames": frames,
                "size": [width, height],
                "seed": seed,
                "fps": fps,
                "units": "mm",
            },
            indent=1,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gslrm.data record", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--formats", default="mammal,anipose,dannce")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="1152x1024", help="WxH of the videos (the real rig: 1152x1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", action="store_true", help="also write ground-truth z-depth per frame and view")
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = set(formats) - set(RECORDINGS)
    if unknown:
        parser.error(f"--formats: unknown {sorted(unknown)} ({', '.join(RECORDINGS)})")
    width, height = (int(v) for v in args.size.lower().split("x"))
    record(args.out, formats, args.frames, width, height, args.seed, depth=args.depth)
    print(f"wrote {args.frames} frames x 6 cameras as {', '.join(formats)} under {args.out}")
    return 0
