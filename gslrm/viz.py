"""Pictures people look at: image strips and grids, and the GT / prediction / error panel with its colorbar.

Everything returns ``uint8`` arrays ``[H, W, 3]`` (matplotlib with the Agg backend, no display needed), so the same
picture goes to wandb, to a PNG or into a video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from torch import Tensor

from gslrm.losses.metrics import per_image_psnr

__all__ = ["enlarged", "to_uint8", "image_row", "image_rows", "ErrorPanel", "error_panel", "save_png", "view_titles"]

ERROR_VMAX = 0.3  # the colorbar's top: errors above 0.3 (of 1) all read as wrong
CELL_PIXELS = 160  # each view is drawn at least this large in the panel, whatever the training resolution
LEFT_MARGIN = 0.2  # inches, for the row labels
# blue (0) -> red (vmax) with no yellow of its own, so the yellow mean line cannot be confused with a value
ERROR_CMAP = "coolwarm"


def to_uint8(images: Float[Tensor, "*batch 3 h w"]) -> np.ndarray:
    """[..., 3, h, w] in [0, 1] -> [..., h, w, 3] uint8 (values clipped)."""
    array = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return np.moveaxis(array, -3, -1)


def image_row(images: Float[Tensor, "v 3 h w"], min_size: int = 0) -> np.ndarray:
    """The views side by side: uint8 [h, v*w, 3] (FaceLift's turntable/input strip layout), each view enlarged by
    an integer factor (nearest neighbour: no invented detail) to at least ``min_size`` pixels high."""
    return np.concatenate(list(to_uint8(enlarged(images, min_size))), axis=1)


def enlarged(images: Float[Tensor, "v c h w"], min_size: int) -> Float[Tensor, "v c h2 w2"]:
    """``images`` repeated by the smallest integer factor that makes them at least ``min_size`` pixels high."""
    factor = -(-min_size // images.shape[-2]) if min_size else 1
    return images if factor <= 1 else images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def image_rows(*rows: Float[Tensor, "v 3 h w"], min_size: int = 0) -> np.ndarray:
    """Rows of views stacked vertically (e.g. GT over render): uint8 [r*h, v*w, 3]."""
    return np.concatenate([image_row(row, min_size) for row in rows], axis=0)


def view_titles(views: int, num_input_views: int) -> list[str]:
    """Panel column titles: which views the model saw as inputs and which are novel."""
    return [("input " if view < num_input_views else "novel ") + str(view) for view in range(views)]


def save_png(image: np.ndarray, path: Path | str) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@dataclass
class ErrorPanel:
    image: np.ndarray  # uint8 [H, W, 3]
    colorbar_box: tuple[int, int, int, int]  # (left, top, right, bottom) of the colorbar in ``image`` pixels
    mean_error: float  # mean |pred - gt| over views, pixels and channels
    max_error: float  # max over pixels of the per-pixel (channel-mean) error
    psnr: float  # mean over views of the per-view PSNR (FaceLift's metric)


def error_panel(
    gt: Float[Tensor, "v 3 h w"],
    pred: Float[Tensor, "v 3 h w"],
    vmax: float = ERROR_VMAX,
    titles: list[str] | None = None,
) -> ErrorPanel:
    """Three rows (GT, prediction, per-pixel error = mean |pred - gt| over channels as a heatmap), one column per
    view. The error row has a vertical colorbar on its right from 0 (blue, bottom) to ``vmax`` (red, top) with a
    yellow line at the mean error; the statistics (mean, max, PSNR) are written at the bottom left."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no display, whatever the global backend
    from matplotlib.figure import Figure

    gt, pred = gt.detach().float().cpu().clamp(0, 1), pred.detach().float().cpu().clamp(0, 1)
    error = (pred - gt).abs().mean(dim=1)  # [v, h, w]
    mean_error, max_error = float(error.mean()), float(error.max())
    psnr = float(per_image_psnr(pred, gt).mean())
    views, _, height, width = gt.shape

    scale = max(1.0, CELL_PIXELS / max(height, width))
    dpi = 100
    cell_w, cell_h = width * scale / dpi, height * scale / dpi
    bar_w, margin_bottom, margin_top = 0.9, 0.45, 0.3
    figure = Figure(figsize=(LEFT_MARGIN + views * cell_w + bar_w, 3 * cell_h + margin_bottom + margin_top), dpi=dpi)
    FigureCanvasAgg(figure)
    fig_w, fig_h = figure.get_size_inches()
    for row, (images, label) in enumerate(((gt, "GT"), (pred, "prediction"))):
        for view in range(views):
            axis = figure.add_axes(_cell(view, row, cell_w, cell_h, fig_w, fig_h, margin_bottom))
            axis.imshow(to_uint8(images[view]), interpolation="nearest")
            axis.set_axis_off()
            if row == 0 and titles is not None:
                axis.set_title(titles[view], fontsize=7, pad=2)
        figure.text(
            0.05 / fig_w, 1 - (margin_top + (row + 0.5) * cell_h) / fig_h, label, rotation=90, va="center", fontsize=7
        )
    heatmap = None
    for view in range(views):
        axis = figure.add_axes(_cell(view, 2, cell_w, cell_h, fig_w, fig_h, margin_bottom))
        heatmap = axis.imshow(error[view].numpy(), cmap=ERROR_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
        axis.set_axis_off()
    figure.text(0.05 / fig_w, (margin_bottom + 0.5 * cell_h) / fig_h, "|error|", rotation=90, va="center", fontsize=7)
    bar_left = (LEFT_MARGIN + views * cell_w + 0.12) / fig_w
    bar_axis = figure.add_axes((bar_left, margin_bottom / fig_h, 0.16 / fig_w, cell_h / fig_h))
    colorbar = figure.colorbar(heatmap, cax=bar_axis, orientation="vertical")
    colorbar.set_ticks([0.0, vmax / 2, vmax])
    colorbar.ax.tick_params(labelsize=6)
    # the mean line sticks out on both sides of the bar so it reads even where the bar is pale
    colorbar.ax.axhline(min(mean_error, vmax), xmin=-0.5, xmax=1.5, clip_on=False, color="yellow", linewidth=2)
    figure.text(
        0.005,
        0.02,
        f"mean err {mean_error:.4f}  max err {max_error:.4f}  PSNR {psnr:.2f} dB",
        ha="left",
        va="bottom",
        fontsize=7,
    )

    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    box = bar_axis.get_window_extent()  # display pixels, origin at the bottom left
    rows = image.shape[0]
    colorbar_box = (int(round(box.x0)), int(round(rows - box.y1)), int(round(box.x1)), int(round(rows - box.y0)))
    return ErrorPanel(image, colorbar_box, mean_error, max_error, psnr)


def _cell(column: int, row: int, cell_w: float, cell_h: float, fig_w: float, fig_h: float, bottom: float):
    """Axes rectangle (figure fractions) of grid cell (column, row), rows counted from the top."""
    x, y = LEFT_MARGIN + column * cell_w, bottom + (2 - row) * cell_h
    return (x / fig_w, y / fig_h, 0.98 * cell_w / fig_w, 0.98 * cell_h / fig_h)
