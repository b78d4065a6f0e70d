"""Image decoding, masks, square crops and resizing, each with its intrinsics update.

All crops are expressed as one window ``(x0, y0, size)`` in raw pixels (it may reach outside the image; the outside
is background with alpha 0). Cropping shifts the principal point by ``(x0, y0)``; resizing the window to ``out``
pixels scales fx, cx by ``out / width`` and fy, cy by ``out / height`` -- exact under the +0.5 pixel-centre
convention because resizing is edge-aligned (``align_corners=False``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from gslrm.data.format import DataFormatError

__all__ = ["load_rgba", "square_window", "foreground_window", "crop_resize", "crop_resize_depth"]


def _require_finite(path: Path, pixels: np.ndarray) -> None:
    bad = ~np.isfinite(pixels)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0][:2])
        raise DataFormatError(
            f"{path}: image: {int(bad.sum())} pixel values are NaN or Inf (first at row {row}, column {col})"
        )


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode any PNG/JPEG into float RGB [H,W,3] in [0,1] and, if the file has one, alpha [H,W]."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) grayscale
                gray = np.asarray(image, dtype=np.float64)
                gray = gray / (65535.0 if gray.max() > 255 or mode.startswith("I;16") else 255.0)
                return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32), None
            if mode == "F":  # float images (TIFF): the one source of non-finite pixels; never clip them into range
                gray = np.asarray(image, dtype=np.float32)
                _require_finite(path, gray)
                return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1), None
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info)
            array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except DataFormatError:
        raise
    except FileNotFoundError:
        raise DataFormatError(f"{path}: image: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataFormatError(f"{path}: image: truncated or not an image ({error})") from None
    if has_alpha:
        return array[..., :3], array[..., 3]
    return array, None


def load_rgba(path: Path, background: np.ndarray, mask_threshold: float = 250.0) -> np.ndarray:
    """Float32 [H,W,4]: RGB composited on ``background`` plus alpha.

    RGBA keeps its alpha (as FaceLift). RGB gets an auto-mask as the mouse fork does: a pixel is background iff
    every channel is above ``mask_threshold / 255``.
    """
    rgb, alpha = _decode(path)
    if alpha is None:
        alpha = (~np.all(rgb > mask_threshold / 255.0, axis=-1)).astype(np.float32)
    else:
        rgb = rgb * alpha[..., None] + background[None, None, :] * (1.0 - alpha[..., None])
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def square_window(width: int, height: int, mode: str) -> tuple[float, float, float]:
    """Centred square window: ``crop`` keeps the short side, ``pad`` keeps the long side."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"square: expected 'crop' or 'pad', got {mode!r}")
    size = float(min(width, height) if mode == "crop" else max(width, height))
    return (width - size) / 2.0, (height - size) / 2.0, size


def foreground_window(alphas: list[np.ndarray], margin: float) -> list[tuple[float, float, float]]:
    """Per-view square windows centred on each view's foreground box, all of one size (the largest box side
    over the sample's views, times ``1 + margin``) so every view keeps the same zoom."""
    boxes = []
    for alpha in alphas:
        ys, xs = np.nonzero(alpha > 0.5)
        if len(xs) == 0:
            h, w = alpha.shape
            boxes.append((0.0, 0.0, float(w), float(h)))
        else:
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    side = max(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes) * (1.0 + margin)
    return [((x0 + x1 - side) / 2.0, (y0 + y1 - side) / 2.0, side) for x0, y0, x1, y1 in boxes]


def _crop(array: np.ndarray, window: tuple[float, float, float], fill: np.ndarray) -> np.ndarray:
    """Integer-aligned crop with padding by ``fill``; the window origin is rounded to whole pixels."""
    x0, y0, size = (int(round(v)) for v in window)
    height, width = array.shape[:2]
    out = np.broadcast_to(fill, (size, size, array.shape[2])).astype(array.dtype).copy()
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, width), min(y0 + size, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def _window_intrinsics(fxfycxcy: np.ndarray, window: tuple[float, float, float], out_size: int) -> np.ndarray:
    x0, y0, size = (int(round(v)) for v in window)
    scale = out_size / size
    fx, fy, cx, cy = fxfycxcy
    return np.array([fx * scale, fy * scale, (cx - x0) * scale, (cy - y0) * scale], dtype=np.float64)


def crop_resize(
    rgba: np.ndarray, fxfycxcy: np.ndarray, window: tuple[float, float, float], out_size: int, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``rgba [H,W,4]`` to the square window, resize to ``out_size``; returns ([4,S,S] float32, intrinsics)."""
    fill = np.concatenate([background, [0.0]]).astype(np.float32)
    square = torch.from_numpy(_crop(rgba, window, fill)).permute(2, 0, 1)[None]
    if square.shape[-1] != out_size:
        square = F.interpolate(square, size=(out_size, out_size), mode="bicubic", align_corners=False, antialias=True)
    return square[0].clamp(0.0, 1.0).numpy(), _window_intrinsics(fxfycxcy, window, out_size)


def crop_resize_depth(depth: np.ndarray, window: tuple[float, float, float], out_size: int) -> np.ndarray:
    """The same window for a z-depth map [H,W] (0 = none); nearest sampling so depths never blend across edges."""
    return crop_resize_map(depth, window, out_size, "nearest-exact")


def crop_resize_map(array: np.ndarray, window: tuple[float, float, float], out_size: int, mode: str) -> np.ndarray:
    """The image's window for a per-pixel map [H,W] (0 outside the image), resized with ``mode``."""
    square = torch.from_numpy(_crop(array[..., None].astype(np.float32), window, np.zeros(1, np.float32)))
    square = square.permute(2, 0, 1)[None]
    if square.shape[-1] != out_size:
        smooth = mode != "nearest-exact"
        square = F.interpolate(
            square,
            size=(out_size, out_size),
            mode=mode,
            antialias=smooth,
            **({"align_corners": False} if smooth else {}),
        )
    return square[0, 0].numpy()
