"""``predict:`` of ``conf/predict.yaml``: what ``python predict.py`` stores and how it splits the work."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gslrm.session.encoding import Encoding

__all__ = ["PredictConfig", "FrameErrors", "VideoBackground"]


class FrameErrors(StrEnum):
    skip = "skip"  # the frame is stored as skipped (count -1, the reason in frames.csv) and counted
    fail = "fail"  # the run stops with one line naming the file and the field


class VideoBackground(StrEnum):
    white = "white"
    black = "black"
    grey = "grey"


@dataclass
class PredictConfig:
    out: str | None = None  # the store folder; null: <log_dir>/predict/sequences/<checkpoint hash>_<split>[_<frames>]
    input_views: list[int] | None = None  # camera indices fed to the model; null: as many as the checkpoint learnt
    min_opacity: float = 0.02  # Gaussians kept per frame (FaceLift's export filter, as eval.min_opacity)
    frames_per_chunk: int = 16  # frames per zarr chunk: the unit of writing, resuming and sharding
    batch_size: int = 1  # frames per forward pass (1: the same bits whatever the sharding; raise it on a GPU)
    num_workers: int = 2  # DataLoader workers reading and cropping the views
    shard: int = 0  # this process's share of the chunks: every num_shards-th from shard
    num_shards: int = 1
    on_error: FrameErrors = FrameErrors.skip
    encoding: Encoding = Encoding.compact  # compact: 23 bytes a Gaussian, quantized below what renders can show;
    # float32: the values as computed, 56 bytes (gslrm/session/encoding.py has the formulas and error bounds)
    ply: bool = False  # also ply/frame_<source frame>.ply per frame (3DGS layout, world units)
    # predict.video=true: <out>/video.mp4 once the store is complete (rerun with it on a complete store: video only)
    video: bool = False
    video_size: int = 256  # the novel view's pixels (square); the real photograph is scaled to this height
    video_orbit_deg_per_s: float = 30.0  # of recording time; 0: a fixed camera at video_azimuth_deg
    video_azimuth_deg: float = 270.0  # at time 0 (270: the normalized frame's front, as the training turntable)
    video_elevation_deg: float = 20.0
    video_fov_deg: float | None = None  # null: fitted to the animal's path over the sequence (50 degrees at most)
    video_background: VideoBackground = VideoBackground.white
    video_real_view: int | None = 0  # the camera shown beside the novel view (null: none)
    video_fps: float | None = None  # null: real time (the store's times), 25 without a frame rate
    overwrite: bool = False  # replace a store of another prediction at `out` (never with num_shards > 1)
    fps: float | None = None  # the recording's frame rate; null: import_info.json's
    progress_every_s: float = 10.0  # seconds between progress lines

    def __post_init__(self) -> None:
        if not 0 < self.min_opacity < 1:
            raise ValueError(f"predict.min_opacity: must be in (0, 1), got {self.min_opacity}")
        for key in ("frames_per_chunk", "batch_size", "num_shards"):
            if getattr(self, key) < 1:
                raise ValueError(f"predict.{key}: must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"predict.shard: must be in 0..num_shards-1={self.num_shards - 1}, got {self.shard}")
        if self.overwrite and self.num_shards > 1:
            raise ValueError("predict.overwrite: not with num_shards > 1 (one shard would delete another's frames)")
        if self.video_size < 16 or self.video_size % 2:
            raise ValueError(f"predict.video_size: an even number >= 16 (H.264), got {self.video_size}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"predict.fps: must be > 0, got {self.fps}")
