"""Video decoding and encoding with PyAV (FFmpeg's libraries in-process).

Why PyAV: it decodes in-process with frame-accurate sequential order, reports a stream's size and frame count from the
container, and its wheels bundle FFmpeg (libx264 included), so the recordings the tests write go through the same
H.264 encoder as a real rig's. Frames are always read sequentially from the first one: seeking is not frame-exact in
many codecs (it lands on a keyframe), so a "frame 1200" reached by seeking may be another frame.

A camera's video may be split into chunks named by their first frame (DANNCE writes ``0.mp4, 3000.mp4, ...``): a
:class:`VideoSource` reads them as one stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gslrm.data.format import DataFormatError

__all__ = ["VIDEO_SUFFIXES", "VideoSource", "VideoWriter", "probe"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  # 0 when the container does not say
    fps: float


def probe(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataFormatError(f"{path}: no video stream")
            stream = container.streams.video[0]
            return VideoInfo(
                stream.codec_context.width,
                stream.codec_context.height,
                int(stream.frames or 0),
                float(stream.average_rate or 0.0),
            )
    except FileNotFoundError:
        raise DataFormatError(f"{path}: video not found") from None
    except av.FFmpegError as error:
        raise DataFormatError(f"{path}: cannot open the video ({error})") from None


@dataclass(frozen=True)
class VideoSource:
    """One camera's video: a file, or chunks whose names are their first frame index."""

    chunks: tuple[tuple[int, Path], ...]  # (first frame, path), sorted

    @classmethod
    def single(cls, path: Path) -> VideoSource:
        return cls(((0, path),))

    @property
    def path(self) -> Path:
        return self.chunks[0][1]

    def describe(self) -> str:
        return (
            str(self.path)
            if len(self.chunks) == 1
            else f"{self.path.parent}/{{{','.join(p.name for _, p in self.chunks)}}}"
        )

    def info(self) -> VideoInfo:
        """Size of the first chunk (every chunk must agree) and the total frame count (0 if unknown)."""
        infos = [probe(path) for _, path in self.chunks]
        for (_, path), info in zip(self.chunks, infos, strict=True):
            if (info.width, info.height) != (infos[0].width, infos[0].height):
                raise DataFormatError(
                    f"{path}: size {info.width}x{info.height} differs from {self.path} ({infos[0].width}x{infos[0].height})"
                )
        last_start, _ = self.chunks[-1]
        frames = last_start + infos[-1].frames if all(info.frames for info in infos) else 0
        return VideoInfo(infos[0].width, infos[0].height, frames, infos[0].fps)

    def frames(self, wanted: Sequence[int], gray: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, HxWx3 uint8 RGB | HxW uint8)`` for each wanted index (sorted), decoding sequentially.

        Raises a one-line error naming the video when it ends before the last wanted frame.
        """
        import av

        wanted = sorted(set(wanted))
        if not wanted:
            return
        position = 0
        cursor = 0  # next entry of ``wanted``
        for chunk, (start, path) in enumerate(self.chunks):
            if start != position:
                raise DataFormatError(
                    f"{path}: chunk starts at frame {start} but the chunks before it hold {position} frames"
                )
            end = self.chunks[chunk + 1][0] if chunk + 1 < len(self.chunks) else None
            if end is not None and wanted[cursor] >= end:
                position = end  # nothing wanted here; trust the next chunk's name and skip decoding this one
                continue
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if position == wanted[cursor]:
                        yield position, frame.to_ndarray(format="gray" if gray else "rgb24")
                        cursor += 1
                        if cursor == len(wanted):
                            return
                    position += 1
        raise DataFormatError(
            f"{self.describe()}: the video has {position} frames, but frame {wanted[cursor]} was asked for (--frames)"
        )


class VideoWriter:
    """H.264 (libx264, yuv420p, CRF ``quality``) like a rig's recordings; width and height must be even."""

    def __init__(self, path: Path, fps: int = 100, quality: int = 18) -> None:
        import av

        self.path = path
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(quality), "preset": "veryfast"}
        self.started = False

    def write(self, image: np.ndarray) -> None:
        import av

        if not self.started:
            self.stream.height, self.stream.width = image.shape[:2]
            self.started = True
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
