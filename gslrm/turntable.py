"""Turntables: FaceLift's orbit (hfov 50 deg, radius 2.7, azimuths from 270 deg) rendered to a strip or a video."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.cameras import FACELIFT_RADIUS, turntable_cameras
from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig, render
from gslrm.viz import image_row, save_png, to_uint8

__all__ = ["render_turntable", "write_video", "save_turntable", "VideoFormat"]


class VideoFormat(StrEnum):
    gif = "gif"
    mp4 = "mp4"


VIEWS_PER_CALL = 8  # bounds the renderer's memory for long (150-view) orbits


@torch.no_grad()
def render_turntable(
    gaussians: Gaussians,
    num_views: int,
    resolution: int,
    elevation_deg: float = 20.0,
    radius: float = FACELIFT_RADIUS,
    background: Tensor | None = None,
    settings: RenderConfig | None = None,
) -> Float[Tensor, "v 3 h w"]:
    """Render the first sample of ``gaussians`` from ``num_views`` orbit cameras (FaceLift's, at ``elevation_deg``;
    FaceLift itself used 0 deg, mice are better seen from slightly above)."""
    settings = settings or RenderConfig()
    sample = gaussians[0]
    device = sample.means.device
    c2w, fxfycxcy = turntable_cameras(num_views, resolution, radius=radius, elevation_deg=elevation_deg)
    frames = []
    for start in range(0, num_views, VIEWS_PER_CALL):
        chunk = slice(start, start + VIEWS_PER_CALL)
        rendered = render(
            sample,
            c2w[None, chunk].to(device),
            fxfycxcy[None, chunk].to(device),
            resolution,
            resolution,
            background=background,
            settings=settings,
            deferred=False,
        )
        frames.append(rendered.rgb[0].float().clamp(0, 1))
    return torch.cat(frames)


def write_video(frames: np.ndarray, path: Path | str, fps: int = 30) -> Path:
    """uint8 frames [n, h, w, 3] to ``path`` (.gif or .mp4, by suffix; MP4 is H.264 through PyAV's FFmpeg)."""
    import imageio.v3 as iio

    from gslrm.data.recordings.video import VideoWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    elif suffix == "mp4":
        height, width = frames.shape[1:3]
        if height % 2 or width % 2:  # yuv420p needs even sizes
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        with VideoWriter(path, fps=fps) as writer:  # PyAV: the one FFmpeg binding, also the importer's
            for frame in frames:
                writer.write(frame)
    else:
        raise ValueError(f"{path}: video format must be one of {', '.join(VideoFormat)}")
    return path


def save_turntable(frames: Float[Tensor, "v 3 h w"], folder: Path, stem: str, video_format: str, fps: int = 30) -> None:
    """``<stem>.<gif|mp4>`` and ``<stem>_preview.png`` (8 frames side by side) in ``folder``."""
    write_video(to_uint8(frames), Path(folder) / f"{stem}.{video_format}", fps=fps)
    save_png(image_row(frames[:: max(1, len(frames) // 8)][:8]), Path(folder) / f"{stem}_preview.png")
