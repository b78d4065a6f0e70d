"""Video frames to the trainer's images: undistortion to the pinhole camera (OpenCV's standard or fisheye model),
then resizing.

Order matters: undistortion runs at the video's resolution (where the calibration holds), then the image is reduced
with area averaging (no aliasing at 0.25x). Masks go through the same maps; a lossy mask video is thresholded first
(compression ringing must not become alpha), and the resampled edge keeps its fractional coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gslrm.data.recordings.camera import RigCamera, frame_kept, undistortion_maps

__all__ = ["FrameConverter", "output_size"]


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class FrameConverter:
    """Turns one camera's frames (and masks) into output images; ``fxfycxcy`` is what they must be written with.
    ``focal_scale`` < 1 resamples to a pinhole camera with shorter focal lengths (a wider view: a fisheye's periphery
    that the same K would drop), > 1 to longer ones."""

    camera: RigCamera
    width: int
    height: int
    scale: float
    focal_scale: float = 1.0

    def __post_init__(self) -> None:
        self.out_width, self.out_height = output_size(self.width, self.height, self.scale)
        self.maps = None
        if not self.camera.is_pinhole or self.focal_scale != 1.0:
            # undistort to K without skew (focal lengths x focal_scale): the image keeps its size and principal point
            self.maps = undistortion_maps(self.camera, self.width, self.height, self.focal_scale)

    def frame_kept(self) -> tuple[float, float] | None:
        """For a resampled camera: (the fraction of the recorded frame the written view holds, the focal scale at
        which it would hold all of it); None when the frames are written as recorded."""
        return None if self.maps is None else frame_kept(self.camera, self.width, self.height, self.focal_scale)

    @property
    def fxfycxcy(self) -> np.ndarray:
        return self.camera.fxfycxcy(self.out_width / self.width, self.out_height / self.height, self.focal_scale)

    def _resample(self, image: np.ndarray, border: float) -> np.ndarray:
        import cv2

        if self.maps is not None:
            image = cv2.remap(image, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        if (self.out_width, self.out_height) != (self.width, self.height):
            shrinking = self.out_width < self.width
            image = cv2.resize(
                image,
                (self.out_width, self.out_height),
                interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
            )
        return image

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB; pixels that undistortion pulls from outside the frame are white (the trainer's background)."""
        return self._resample(rgb, border=(255, 255, 255))

    def mask(self, mask: np.ndarray, threshold: float) -> np.ndarray:
        """uint8 alpha from an 8-bit mask: thresholded at ``threshold`` (of 255) at the source resolution first."""
        binary = (mask.astype(np.float32) >= threshold * 255.0).astype(np.float32)
        return np.clip(np.rint(self._resample(binary, border=0.0) * 255.0), 0, 255).astype(np.uint8)
