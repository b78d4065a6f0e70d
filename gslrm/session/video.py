"""``predict.video=true``: an MP4 of a stored sequence over time, seen from a novel camera beside a real one.

Each frame's Gaussians are read from the store (one chunk at a time, so memory stays flat), taken back to the
model's normalized frame (the rig centre at the origin, +Z up, the cameras about 2.7 units out: the frame the model
was trained in) and rendered from a camera orbiting there at ``video_orbit_deg_per_s`` of recording time (0: fixed
at ``video_azimuth_deg``), on ``video_background``, its field of view fitted to where the animal goes
(``fit_fov_deg``) unless ``video_fov_deg`` is set. Beside it: camera ``video_real_view``'s photograph of that frame,
scaled to the same height. The video plays at the recording's frame rate (the store's times), or ``video_fps``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from gslrm.cameras import FACELIFT_HFOV_DEG, FACELIFT_RADIUS, turntable_cameras
from gslrm.data.format import CAMERAS_FILE, read_cameras
from gslrm.render import render
from gslrm.session.config import PredictConfig, VideoBackground
from gslrm.session.store import SequenceStore
from gslrm.session.world import normalized_from_world, normalized_gaussians

log = logging.getLogger(__name__)

__all__ = ["write_video", "render_frame", "fit_fov_deg", "orbit_azimuth", "BACKGROUNDS"]

BACKGROUNDS = {VideoBackground.white: (1.0,) * 3, VideoBackground.black: (0.0,) * 3, VideoBackground.grey: (0.5,) * 3}


def orbit_azimuth(time_s: float, config: PredictConfig) -> float:
    """Degrees: the novel camera's azimuth at ``time_s`` seconds of the recording."""
    return (config.video_azimuth_deg + config.video_orbit_deg_per_s * time_s) % 360.0


def _real_image(sample: Path, view: int, height: int) -> np.ndarray | None:
    """Camera ``view``'s photograph of ``sample``, ``height`` pixels high (None, with a warning, when unreadable)."""
    from PIL import Image

    try:
        frame = read_cameras(sample / CAMERAS_FILE)[view]
        with Image.open(sample / frame.file_path) as image:
            rgb = image.convert("RGB")
            width = max(2, round(rgb.width * height / rgb.height / 2) * 2)  # H.264: even sizes
            return np.asarray(rgb.resize((width, height), Image.BILINEAR))
    except (OSError, IndexError, ValueError) as error:
        log.warning("video: no real image of %s camera %d (%s)", sample, view, error)
        return None


def fit_fov_deg(store: SequenceStore, matrices: np.ndarray, sampled: int = 64) -> float:
    """A field of view that keeps the animal in the picture: in up to ``sampled`` frames spread over the sequence,
    the distance from the rig centre (normalized frame) within which 90 % of the opacity lies; their median, 30 %
    more, seen from the orbit's distance; FaceLift's 50 degrees at most. Median and quantile because a frame's
    stray Gaussians (measured on make train's checkpoint: 95 % of the opacity within 0.6 units in most frames,
    within 1.6 in some) would otherwise zoom every frame out to them."""
    count = len(matrices)
    reaches = []
    for position in sorted({int(i) for i in np.linspace(0, count - 1, min(sampled, count))}):
        frame = store.read_frame(position)
        if frame["count"] <= 0:
            continue
        inverse = normalized_from_world(matrices[position])
        radius = np.linalg.norm(frame["means"].astype(np.float64) @ inverse[:3, :3].T + inverse[:3, 3], axis=1)
        order = np.argsort(radius)
        cumulative = np.cumsum(frame["opacities"][order].astype(np.float64))
        reaches.append(float(radius[order][np.searchsorted(cumulative, 0.9 * cumulative[-1])]))
    reach = float(np.median(reaches)) if reaches else 0.0
    if reach <= 0:
        return FACELIFT_HFOV_DEG
    return min(FACELIFT_HFOV_DEG, 2.0 * math.degrees(math.atan(1.3 * reach / FACELIFT_RADIUS)))


def render_frame(
    frame: dict, matrix: np.ndarray, azimuth_deg: float, config: PredictConfig, fov_deg: float = FACELIFT_HFOV_DEG
) -> np.ndarray:
    """One stored frame (world units) from the orbit camera in the normalized frame: uint8 [size, size, 3]."""
    size = config.video_size
    background = torch.tensor(BACKGROUNDS[config.video_background])
    c2w, fxfycxcy = turntable_cameras(1, size, FACELIFT_RADIUS, config.video_elevation_deg, hfov_deg=fov_deg)
    # turntable_cameras' first view sits at azimuth 270 (the front); turn it to ``azimuth_deg`` about +Z
    turn = math.radians(azimuth_deg - 270.0)
    rotation = torch.eye(4)
    rotation[:2, :2] = torch.tensor([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    c2w = rotation @ c2w
    if frame["count"] <= 0:
        return np.full((size, size, 3), np.uint8(round(255 * BACKGROUNDS[config.video_background][0])))
    gaussians = normalized_gaussians(frame, matrix)
    with torch.no_grad():
        out = render(gaussians, c2w[None], fxfycxcy[None], size, size, background=background)
    return (out.rgb[0, 0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def write_video(store: SequenceStore, samples: list[Path], path: Path, config: PredictConfig) -> Path:
    """``path`` (an MP4): every stored frame in order, skipped frames drawn as empty background."""
    from gslrm.data.recordings.video import VideoWriter

    group = store.group()
    times = group["time"][:]
    matrices = group["world_from_normalized"][:]
    fps = config.video_fps or store.playback_fps()
    fov = config.video_fov_deg or fit_fov_deg(store, matrices)
    partial = path.with_name(f".{path.name}.partial.mp4")
    with VideoWriter(partial, fps=max(1, round(fps))) as writer:
        for position, frame in enumerate(store.iter_frames()):
            time_s = times[position] if math.isfinite(times[position]) else position / fps
            novel = render_frame(frame, matrices[position], orbit_azimuth(time_s, config), config, fov)
            panels = [novel]
            if config.video_real_view is not None:
                real = _real_image(samples[position], config.video_real_view, config.video_size)
                panels.append(real if real is not None else np.zeros_like(novel))
            writer.write(np.concatenate(panels, axis=1))
    partial.replace(path)
    log.info("video: %s (%d frames at %g fps, field of view %.1f degrees)", path, len(times), round(fps), fov)
    return path
