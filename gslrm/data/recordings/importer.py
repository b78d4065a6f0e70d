"""``python -m gslrm.data import FORMAT SRC --out ROOT``: a rig's videos and calibration to the trainer's format.

One sample folder per source frame (``frame_XXXXXX``, the source frame index) with ``opencv_cameras.json`` and
``images/cam_VVV.png`` (RGBA with the mask as alpha when masks exist, else RGB for the loader's auto-mask), the split
files and ``import_info.json``. Frames already written are skipped, so an interrupted import resumes. Each camera's
video is decoded once, sequentially, by one worker; a frame's ``opencv_cameras.json`` is written (atomically) only
when all its images are, so it marks the frame complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gslrm.data.format import CAMERAS_FILE, DataFormatError, Frame, write_cameras
from gslrm.data.recordings import anipose, dannce, mammal
from gslrm.data.recordings.frames import parse_frames, parse_split, split_frames
from gslrm.data.recordings.resample import FrameConverter
from gslrm.data.recordings.source import MaskFolder, Recording
from gslrm.data.recordings.video import VideoSource
from gslrm.files import written_atomically

__all__ = ["FORMATS", "ImportOptions", "import_recording", "main"]

log = logging.getLogger(__name__)

FORMATS = {"mammal": mammal.read, "anipose": anipose.read, "dannce": dannce.read}
INFO_FILE = "import_info.json"


@dataclass(frozen=True)
class ImportOptions:
    format: str
    src: Path
    out: Path
    frames: str | None = None
    views: str | None = None
    scale: float = 1.0
    masks: Path | None = None
    mask_threshold: float = 0.5
    split: str = "val=0.1,test=0.1"
    split_gap: int = 50
    workers: int = 0  # 0 = one per camera, at most the CPU count
    progress: bool = True
    focal_scale: float = 1.0  # the written pinhole camera's focal lengths, times the calibration's
    cam_regex: str | None = None  # anipose: the regex naming each video's camera (default: the project's config.toml)


@dataclass(frozen=True)
class CameraJob:
    """What one worker does: decode one camera's video (and masks) and write its image for every pending frame."""

    view: int
    video: VideoSource
    mask: VideoSource | MaskFolder | None
    converter: FrameConverter
    frames: tuple[int, ...]
    out: Path
    mask_threshold: float


def frame_dir(out: Path, frame: int) -> Path:
    return out / f"frame_{frame:06d}"


def image_name(view: int) -> str:
    return f"images/cam_{view:03d}.png"


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with written_atomically(path) as partial:  # a killed import leaves no truncated image behind
        Image.fromarray(pixels).save(partial, format="PNG")


def convert_camera(job: CameraJob, progress=None) -> int:
    """Write ``images/cam_VVV.png`` of this camera for every frame in ``job.frames`` that lacks it."""
    pending = [f for f in job.frames if not (frame_dir(job.out, f) / image_name(job.view)).is_file()]
    if progress is not None and len(pending) < len(job.frames):
        progress.put(len(job.frames) - len(pending))
    if not pending:
        return 0
    masks = job.mask.frames(pending, gray=True) if job.mask is not None else None
    for index, rgb in job.video.frames(pending):
        if rgb.shape[:2] != (job.converter.height, job.converter.width):
            raise DataFormatError(
                f"{job.video.describe()}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"expected {job.converter.width}x{job.converter.height}"
            )
        pixels = job.converter.image(rgb)
        if masks is not None:
            mask_index, mask = next(masks)
            if mask.shape != rgb.shape[:2]:
                raise DataFormatError(
                    f"{job.mask.describe()}: frame {mask_index} is {mask.shape[1]}x{mask.shape[0]}, "
                    f"the video {rgb.shape[1]}x{rgb.shape[0]}"
                )
            pixels = np.concatenate([pixels, job.converter.mask(mask, job.mask_threshold)[..., None]], axis=2)
        _save_png(frame_dir(job.out, index) / image_name(job.view), pixels)
        if progress is not None:
            progress.put(1)
    return len(pending)


def _check_video(recording: Recording, camera_index: int) -> tuple[int, int, int]:
    """The video's (width, height, frames) after checking it against the calibration and its mask video."""
    camera, video = recording.cameras[camera_index], recording.videos[camera_index]
    info = video.info()
    if camera.size is not None and tuple(camera.size) != (info.width, info.height):
        raise DataFormatError(
            f"{video.describe()}: size {info.width}x{info.height} disagrees with {recording.calibration} "
            f"camera {camera.name!r}: size {camera.size[0]}x{camera.size[1]}"
        )
    cx, cy = camera.K[0, 2], camera.K[1, 2]
    if not (0 < cx < info.width and 0 < cy < info.height):
        raise DataFormatError(
            f"{video.describe()}: size {info.width}x{info.height} disagrees with {recording.calibration} camera "
            f"{camera.name!r}: its principal point ({cx:.1f}, {cy:.1f}) lies outside the frame (a rescaled video?)"
        )
    mask = recording.masks[camera_index]
    if isinstance(mask, VideoSource):
        mask_info = mask.info()
        if (mask_info.width, mask_info.height) != (info.width, info.height):
            raise DataFormatError(
                f"{mask.describe()}: size {mask_info.width}x{mask_info.height} differs from its video "
                f"{video.describe()} ({info.width}x{info.height})"
            )
    return info.width, info.height, info.frames


def _views(recording: Recording, spec: str | None) -> list[int]:
    if not spec:
        return list(range(len(recording.cameras)))
    views = [recording.camera_index(key.strip()) for key in spec.split(",") if key.strip()]
    if len(set(views)) != len(views):
        raise DataFormatError(f"--views {spec}: a camera is listed twice")
    return views


def _decoder() -> str:
    import av

    return f"PyAV {av.__version__} (FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} libavcodec)"


def _plan(options: ImportOptions) -> tuple[Recording, list[int], list[FrameConverter], dict, dict]:
    """Everything checked before any pixel is decoded: cameras, videos, sizes, frames and splits."""
    extra = {"cam_regex": options.cam_regex} if options.format == "anipose" else {}
    recording = FORMATS[options.format](options.src, options.masks, **extra)
    views = _views(recording, options.views)
    sizes = [_check_video(recording, index) for index in views]
    lengths = [frames for _, _, frames in sizes]
    frames = parse_frames(options.frames, min(lengths) if all(lengths) else 0)
    for index, (_, _, length) in zip(views, sizes, strict=True):
        sources = [(recording.videos[index], length)]
        if isinstance(recording.masks[index], VideoSource):
            sources.append((recording.masks[index], recording.masks[index].info().frames))
        for source, count in sources:
            if count and frames[-1] >= count:
                raise DataFormatError(
                    f"{source.describe()}: the video has {count} frames, "
                    f"but frame {frames[-1]} was asked for (--frames)"
                )
    splits, dropped = split_frames(frames, parse_split(options.split), options.split_gap)
    converters = [
        FrameConverter(recording.cameras[i], w, h, options.scale, options.focal_scale)
        for i, (w, h, _) in zip(views, sizes, strict=True)
    ]
    kept = [c.frame_kept() for c in converters]
    settings = {
        "format": options.format,
        "source": str(options.src.resolve()),
        "frames": options.frames,
        "views": views,
        "scale": options.scale,
        "focal_scale": options.focal_scale,
        "masks": [m.describe() if m else None for m in (recording.masks[i] for i in views)],
        "mask_threshold": options.mask_threshold,
        "split": options.split,
        "split_gap": options.split_gap,
    }
    info = {
        "options": settings,
        "calibration": str(recording.calibration),
        "convention": {
            "source": f"{recording.pixel_convention} pixel coordinates, x_cam = R X + t (world -> camera)",
            "written": "gslrm: w2c = [R t], fxfycxcy with pixel centres at +0.5 (cx = OpenCV cx + 0.5)",
            "units": recording.units,
        },
        "views": [
            {
                "view": image_name(v),
                "camera": recording.cameras[i].name,
                "video": recording.videos[i].describe(),
                "source_size": [c.width, c.height],
                "image_size": [c.out_width, c.out_height],
                "undistorted": c.maps is not None,
                "distortion": recording.cameras[i].dist.tolist(),
                "distortion_model": "opencv_fisheye" if recording.cameras[i].fisheye else "opencv",
                "K_source_opencv": recording.cameras[i].K.tolist(),
                "fxfycxcy": c.fxfycxcy.tolist(),
                "frame_kept": None if held is None else round(held[0], 4),
                "focal_scale_keeping_all": None if held is None else math.floor(held[1] * 1e4) / 1e4,  # not up
            }
            for v, (i, c, held) in enumerate(zip(views, converters, kept, strict=True))
        ],
        "undistortion": "OpenCV (cv2.fisheye for fisheye lenses) initUndistortRectifyMap + bilinear remap to K without "
        "skew, focal lengths x focal_scale (same size), then INTER_AREA resize",
        "decoder": _decoder(),
        "frames": frames,
        # source frames per second (the first camera's container; a rig's cameras are synchronized): predict.py
        # turns frame indices into times with it
        "fps": _frame_rate(recording, views[0]),
        "splits": {key: len(value) for key, value in splits.items()},
        "dropped_for_split_gap": dropped,
        "notes": recording.notes
        + (
            []
            if any(recording.masks[i] for i in views)
            else [
                "no masks: images are RGB and the loader auto-masks pixels above data.mask_threshold (white background "
                "only); give --masks for a real arena"
            ]
        ),
    }
    return recording, views, converters, splits, info


def _frame_rate(recording: Recording, camera_index: int) -> float | None:
    fps = float(recording.videos[camera_index].info().fps or 0)
    return fps if math.isfinite(fps) and fps > 0 else None


def _write_info(out: Path, info: dict, complete: bool) -> None:
    with written_atomically(out / INFO_FILE) as partial:
        partial.write_text(json.dumps({**info, "complete": complete}, indent=1))


def _resume_check(out: Path, info: dict) -> None:
    path = out / INFO_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text()).get("options")
    except json.JSONDecodeError:
        return
    if isinstance(previous, dict):
        previous.setdefault("focal_scale", 1.0)  # imports written before --focal-scale existed used 1
    if previous != info["options"]:
        changed = sorted(k for k in info["options"] if (previous or {}).get(k) != info["options"][k])
        raise DataFormatError(
            f"{path}: options: {out} holds an import made with other {', '.join(changed)}; "
            "use another --out (or delete it) to import with these"
        )


def import_recording(options: ImportOptions) -> dict:
    """Run the import; returns import_info (also written to ROOT)."""
    from tqdm import tqdm

    recording, views, converters, splits, info = _plan(options)
    resampled = [view for view in info["views"] if view["frame_kept"] is not None]
    if resampled and min(view["frame_kept"] for view in resampled) < 0.999:
        least = min(resampled, key=lambda view: view["frame_kept"])
        scale = min(view["focal_scale_keeping_all"] for view in resampled)
        log.info(
            f"the written pinhole views hold as little as {least['frame_kept']:.0%} of the recorded frames (the "
            f"lens pushes the rest outside them); --focal-scale {math.floor(scale * 1e3) / 1e3:g} would hold all "
            "of every frame"
        )
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    _resume_check(out, info)
    _write_info(out, info, complete=False)
    frames = sorted(f for block in splits.values() for f in block)
    pending = tuple(f for f in frames if not (frame_dir(out, f) / CAMERAS_FILE).is_file())
    jobs = [
        CameraJob(v, recording.videos[i], recording.masks[i], converters[v], pending, out, options.mask_threshold)
        for v, i in enumerate(views)
    ]
    workers = options.workers or min(len(jobs), os.cpu_count() or 1)
    with tqdm(
        total=len(pending) * len(jobs),
        desc=f"importing {len(frames)} frames x {len(jobs)} cameras",
        unit="image",
        disable=not options.progress,
    ) as bar:
        if workers <= 1:
            for job in jobs:
                convert_camera(job, _Bar(bar))
        else:
            _run_parallel(jobs, workers, bar)
    cameras = [
        Frame(image_name(v), c.out_width, c.out_height, c.fxfycxcy, recording.cameras[i].w2c)
        for v, (i, c) in enumerate(zip(views, converters, strict=True))
    ]  # the same rig for every frame
    names = [recording.cameras[i].name for i in views]
    for frame in pending:  # last: a frame's cameras file marks all its images written
        with written_atomically(frame_dir(out, frame) / CAMERAS_FILE) as partial:
            write_cameras(partial, cameras, f"frame_{frame:06d}", extra={"source_frame": frame, "cameras": names})
    for key in ("train", "val", "test"):
        if splits[key]:
            (out / f"{key}.txt").write_text("".join(f"frame_{f:06d}\n" for f in splits[key]))
        else:
            (out / f"{key}.txt").unlink(missing_ok=True)
    info["written_this_run"] = len(pending)
    _write_info(out, info, complete=True)
    return info


class _Bar:
    """The queue interface of the workers' progress, onto a tqdm bar in this process."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def put(self, count: int) -> None:
        self.bar.update(count)


def _run_parallel(jobs: list[CameraJob], workers: int, bar) -> None:
    import multiprocessing
    import queue

    # spawn, not fork: OpenCV's thread pool, started here by the undistortion maps, deadlocks in forked children
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        progress = manager.Queue()
        pool = context.Pool(workers, initializer=_worker_init)
        try:
            pending = [pool.apply_async(convert_camera, (job, progress)) for job in jobs]
            while pending:
                try:
                    bar.update(progress.get(timeout=0.2))
                except queue.Empty:
                    pass
                for result in [r for r in pending if r.ready()]:
                    pending.remove(result)
                    result.get()  # a worker's DataFormatError stops the import here, with its one line
            pool.close()
        finally:
            pool.terminate()  # on an error, the other cameras' workers stop now rather than decode to the end
            pool.join()
        while not progress.empty():
            bar.update(progress.get())


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per camera already uses the cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gslrm.data import", description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("src", type=Path, help="the recording folder")
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (resumable)")
    parser.add_argument(
        "--frames", default=None, help="START:STOP:STEP (STOP exclusive) or a file of frame indices; default all"
    )
    parser.add_argument(
        "--views", default=None, help="cameras to import, by index or name, in output order (default all)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="image scale, e.g. 0.25: 1152x1024 -> 288x256")
    parser.add_argument(
        "--focal-scale",
        type=float,
        default=1.0,
        help="focal lengths of the written pinhole cameras, times the calibration's: < 1 keeps more of a wide "
        "(fisheye) lens' field of view; != 1 resamples every camera",
    )
    parser.add_argument("--masks", type=Path, default=None, help="mask folder (default: the format's usual place)")
    parser.add_argument(
        "--mask-threshold", type=float, default=0.5, help="fraction of 255 above which a mask pixel is set"
    )
    parser.add_argument(
        "--split", default="val=0.1,test=0.1", help="fractions of the frames, as contiguous time blocks"
    )
    parser.add_argument("--split-gap", type=int, default=50, help="source frames dropped before each val/test block")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes (one camera each); default min(cameras, cores)"
    )
    parser.add_argument(
        "--cam-regex",
        default=None,
        help="anipose: regex whose first group is a video's camera name, as anipose's cam_regex "
        "(default: [triangulation] cam_regex of the project's config.toml)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the data check summary at the end")
    args = parser.parse_args(argv)
    if args.cam_regex is not None and args.format != "anipose":
        parser.error("--cam-regex is anipose's (how its videos are named)")
    if args.scale <= 0 or args.focal_scale <= 0 or not 0 < args.mask_threshold <= 1:
        parser.error("--scale and --focal-scale must be > 0 and --mask-threshold in (0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ImportOptions(
        args.format,
        args.src,
        args.out,
        args.frames,
        args.views,
        args.scale,
        args.masks,
        args.mask_threshold,
        args.split,
        args.split_gap,
        args.workers,
        focal_scale=args.focal_scale,
        cam_regex=args.cam_regex,
    )
    try:
        info = import_recording(options)
    except DataFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {info['splits']} frames ({info['written_this_run']} new), "
        f"{len(info['views'])} views at {info['views'][0]['image_size'][0]}x{info['views'][0]['image_size'][1]}"
    )
    if args.no_check:
        return 0
    from gslrm.data.check import check_dataset, print_report

    report = check_dataset(args.out)
    print_report(report)
    return 1 if report.errors else 0
