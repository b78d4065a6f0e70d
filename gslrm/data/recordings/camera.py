"""One calibrated camera of a recording rig, as the rig's calibration file states it, and its conversion to the
trainer's on-disk format.

Calibration files use OpenCV's model: ``x_cam = R X + t``, ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` and the
distortion ``(k1, k2, p1, p2, k3)``, or, for a fisheye lens (anipose's ``fisheye = true``), OpenCV's fisheye model
``(k1, k2, k3, k4)``: a ray at angle theta to the optical axis lands at radius ``f * theta_d`` with
``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)`` (a pinhole's is ``f * tan(theta)``). They
differ in where pixel coordinates start:

- OpenCV (MAMMAL, anipose): the centre of the first pixel is (0, 0);
- MATLAB (DANNCE / Label3D): the centre of the first pixel is (1, 1);
- gslrm (FaceLift's rays): the first pixel spans [0, 1), so its centre is (0.5, 0.5).

``RigCamera.K`` is always kept in OpenCV's convention (readers of MATLAB files subtract 1); ``fxfycxcy()`` adds 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gslrm.data.format import DataFormatError

__all__ = [
    "MATLAB_MINUS_OPENCV",
    "OPENCV_TO_GSLRM",
    "RigCamera",
    "checked_intrinsics",
    "checked_matrix",
    "checked_rotation",
    "distortion",
    "fisheye_distortion",
    "frame_kept",
    "undistortion_maps",
    "pinhole_positions",
]

OPENCV_TO_GSLRM = 0.5  # gslrm's pixel coordinates are OpenCV's plus a half pixel
MATLAB_MINUS_OPENCV = 1.0  # MATLAB's are OpenCV's plus one


@dataclass(frozen=True)
class RigCamera:
    """A camera as calibrated: OpenCV's K (pixel centres at integers), world->camera R and t, distortion, size."""

    name: str
    K: np.ndarray  # [3,3] float64
    R: np.ndarray  # [3,3] float64, world -> camera
    t: np.ndarray  # [3] float64, in the calibration's units
    dist: np.ndarray  # [5] float64: k1, k2, p1, p2, k3 (all zero for an undistorted video); fisheye: [4] k1..k4
    size: tuple[int, int] | None = None  # (width, height) when the calibration states it
    fisheye: bool = False  # OpenCV's fisheye model (equidistant projection + dist) instead of its standard one

    @property
    def is_pinhole(self) -> bool:
        """No distortion and no skew: the video is already what the trainer's pinhole model expects. A fisheye lens
        never is, even with all-zero coefficients: its projection is f * theta, not f * tan(theta)."""
        return not self.fisheye and not np.any(self.dist) and self.K[0, 1] == 0.0

    def pinhole_K(self, focal_scale: float = 1.0) -> np.ndarray:
        """K without skew, focal lengths times ``focal_scale``: the pinhole camera the frames are resampled to when
        they are not already pinhole (or when ``focal_scale`` != 1, which widens or narrows the field of view)."""
        K = self.K.copy()
        K[0, 1] = 0.0
        K[0, 0] *= focal_scale
        K[1, 1] *= focal_scale
        return K

    @property
    def w2c(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = self.R, self.t
        return matrix

    def fxfycxcy(self, scale_x: float = 1.0, scale_y: float = 1.0, focal_scale: float = 1.0) -> np.ndarray:
        """gslrm intrinsics of the pinhole camera ``pinhole_K(focal_scale)``, for images resized by (scale_x, scale_y).

        In gslrm's convention (pixel edges at integers) resizing scales every coordinate, so cx' = s * cx; in OpenCV's
        this is the familiar (cx + 0.5) * s - 0.5.
        """
        K = self.pinhole_K(focal_scale)
        return np.array(
            [
                K[0, 0] * scale_x,
                K[1, 1] * scale_y,
                (K[0, 2] + OPENCV_TO_GSLRM) * scale_x,
                (K[1, 2] + OPENCV_TO_GSLRM) * scale_y,
            ]
        )

    @classmethod
    def from_gslrm(
        cls,
        name: str,
        fxfycxcy,
        w2c,
        size: tuple[int, int] | None = None,
        dist=None,
        fisheye: bool = False,
        skew: float = 0.0,
    ) -> RigCamera:
        """The inverse of ``w2c``/``fxfycxcy``: a gslrm view as a rig calibration would state it (``skew``: K[0, 1],
        a camera whose recorded frames are sheared; ``pinhole_K()`` is still the gslrm view's)."""
        fx, fy, cx, cy = np.asarray(fxfycxcy, dtype=np.float64)
        K = np.array([[fx, skew, cx - OPENCV_TO_GSLRM], [0.0, fy, cy - OPENCV_TO_GSLRM], [0.0, 0.0, 1.0]])
        w2c = np.asarray(w2c, dtype=np.float64)
        dist = np.zeros(4 if fisheye else 5) if dist is None else np.asarray(dist, dtype=np.float64)
        return cls(name, K, w2c[:3, :3].copy(), w2c[:3, 3].copy(), dist, size, fisheye)

    def standard_distortion(self) -> np.ndarray:
        """(k1, k2, p1, p2, k3) for writers of formats that only know OpenCV's standard model."""
        if self.fisheye:
            raise ValueError(f"camera {self.name}: a fisheye lens has no (k1, k2, p1, p2, k3) form")
        return self.dist


def checked_matrix(where: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a finite float64 array of ``shape`` (a 3x1 or 1x3 vector counts as 3), else one line naming it."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataFormatError(f"{where}: not an array of numbers ({error})") from None
    if shape == (3,) and array.size == 3:
        array = array.reshape(3)
    if array.shape != shape:
        raise DataFormatError(f"{where}: expected shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise DataFormatError(f"{where}: contains NaN or Inf")
    return array


def checked_rotation(where: str, value: object) -> np.ndarray:
    """A 3x3 rotation (orthonormal, det +1), else one line naming the field and what is wrong."""
    rotation = checked_matrix(where, value, (3, 3))
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > 1e-4:
        raise DataFormatError(f"{where}: not a rotation matrix (max |R^T R - I| = {error:.3g})")
    determinant = float(np.linalg.det(rotation))
    if determinant < 0:
        raise DataFormatError(f"{where}: a reflection, not a rotation (det = {determinant:.3f}); axes flipped?")
    return rotation


def checked_intrinsics(where: str, value: object) -> np.ndarray:
    K = checked_matrix(where, value, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataFormatError(f"{where}: focal lengths must be > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}")
    if np.abs(K[1:, 0]).max() > 0 or abs(K[2, 1]) > 0 or K[2, 2] != 1.0:
        raise DataFormatError(f"{where}: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    return K


def distortion(where: str, radial: object = (), tangential: object = ()) -> np.ndarray:
    """OpenCV's (k1, k2, p1, p2, k3) from up to three radial and up to two tangential coefficients."""
    k = np.asarray(radial, dtype=np.float64).reshape(-1)
    p = np.asarray(tangential, dtype=np.float64).reshape(-1)
    if k.size > 3 or p.size > 2:
        raise DataFormatError(
            f"{where}: expected up to 3 radial and 2 tangential coefficients, got {k.size} and {p.size}"
        )
    if not (np.isfinite(k).all() and np.isfinite(p).all()):
        raise DataFormatError(f"{where}: contains NaN or Inf")
    k, p = np.pad(k, (0, 3 - k.size)), np.pad(p, (0, 2 - p.size))
    return np.array([k[0], k[1], p[0], p[1], k[2]])


def fisheye_distortion(where: str, coefficients: object) -> np.ndarray:
    """OpenCV's fisheye (k1, k2, k3, k4): exactly four finite numbers."""
    k = np.asarray(coefficients, dtype=np.float64).reshape(-1)
    if k.size != 4:
        raise DataFormatError(f"{where}: a fisheye calibration has 4 coefficients (k1 k2 k3 k4), got {k.size}")
    if not np.isfinite(k).all():
        raise DataFormatError(f"{where}: contains NaN or Inf")
    return k


# Skew. The calibrated model is u = fx x_d + s y_d + cx, v = fy y_d + cy for distorted normalized coordinates
# (x_d, y_d) (MATLAB estimates s when asked; DANNCE's own projection applies it). OpenCV's initUndistortRectifyMap
# and undistortPoints ignore K[0, 1]: their maps are the same with and without it. So both functions below call
# OpenCV with the unskewed K and move the x coordinate by s y_d = s (v - cy) / fy themselves, which is exact:
# v, and so y_d, does not depend on s.


def _skew_shift(camera: RigCamera, v: np.ndarray) -> np.ndarray:
    """How far the skew moves a recorded pixel in x: s (v - cy) / fy (0 for an unskewed camera)."""
    K = camera.K
    return K[0, 1] * (v - K[1, 2]) / K[1, 1]


def undistortion_maps(
    camera: RigCamera, width: int, height: int, focal_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps that resample the camera's frames (``width x height``) to the pinhole camera
    ``camera.pinhole_K(focal_scale)`` of the same size: for each output pixel, where it lies in the recorded frame
    (skew included; see above)."""
    import cv2

    target = camera.pinhole_K(focal_scale)
    if camera.fisheye:
        return cv2.fisheye.initUndistortRectifyMap(
            camera.K, camera.dist, np.eye(3), target, (width, height), cv2.CV_32FC1
        )
    if camera.K[0, 1] == 0.0:
        return cv2.initUndistortRectifyMap(camera.K, camera.dist, None, target, (width, height), cv2.CV_32FC1)
    map_x, map_y = cv2.initUndistortRectifyMap(
        camera.pinhole_K(), camera.dist, None, target, (width, height), cv2.CV_32FC1
    )
    return (map_x + _skew_shift(camera, map_y.astype(np.float64))).astype(np.float32), map_y


def pinhole_positions(camera: RigCamera, pixels: np.ndarray, focal_scale: float = 1.0) -> np.ndarray:
    """Recorded (distorted) pixel positions ``[N, 2]`` (OpenCV's convention) -> where the same rays land in the
    pinhole camera ``camera.pinhole_K(focal_scale)``: the inverse of ``undistortion_maps``, solved to 1e-12."""
    import cv2

    points = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    target = camera.pinhole_K(focal_scale)
    if camera.fisheye:
        out = cv2.fisheye.undistortPoints(points, camera.K, camera.dist, R=np.eye(3), P=target, criteria=criteria)
    else:
        unskewed = points.copy()
        unskewed[..., 0] -= _skew_shift(camera, points[..., 1])
        out = cv2.undistortPoints(unskewed, camera.pinhole_K(), camera.dist, R=None, P=target, criteria=criteria)
    return out.reshape(-1, 2)


def frame_kept(camera: RigCamera, width: int, height: int, focal_scale: float = 1.0) -> tuple[float, float]:
    """How much of a recorded ``width x height`` frame the pinhole view ``pinhole_K(focal_scale)`` of the same size
    holds: (the fraction of a 48x48 grid of frame pixels whose rays land inside it, the focal scale at which all of
    them would). Barrel and fisheye lenses push the frame's corners outside the pinhole view with the same K."""
    xs, ys = np.meshgrid(np.linspace(0, width - 1, 48), np.linspace(0, height - 1, 48))
    offsets = pinhole_positions(camera, np.stack([xs.ravel(), ys.ravel()], -1), focal_scale) - camera.K[:2, 2]
    # the pinhole view spans [-0.5, size - 0.5] (OpenCV's pixel centres); positions scale about the principal point
    low, high = -0.5 - camera.K[:2, 2], np.array([width, height]) - 0.5 - camera.K[:2, 2]
    inside = ((offsets >= low) & (offsets <= high)).all(axis=1)
    with np.errstate(divide="ignore"):
        room = np.where(offsets < 0, low / offsets, high / offsets)  # how far each offset may grow, per axis
    # a hair under the exact value, so that the extreme pixel lands inside despite the solver's roundoff
    return float(inside.mean()), float(focal_scale * min(1.0, np.nanmin(room) * (1.0 - 1e-6)))
