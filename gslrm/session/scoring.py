"""eval.py over a recording with a held-out camera (``eval.holdout_view=k``): which views are inputs, each frame's
predicted and true animal position, and the temporal stability of the prediction.

The held-out camera is never an input: the inputs are the first ``num_input_views`` of the rig's view order without
it, and its metrics are reported as ``*_holdout``. Per frame, the prediction's position is the opacity-weighted
centroid of its Gaussians. The truth is the generator's centre of mass (``ground_truth/animal.csv`` of a
``python -m gslrm.data record`` recording, world units) where it is known; else the centroid of the held-out
camera's mask, in pixels, against the predicted centroid projected into that camera. Temporal stability compares
the frame-to-frame motion of the two: the RMS of their difference over consecutive frames, beside the true motion's
mean for scale (a model that stays put scores the true motion; one that jitters, more).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gslrm.data.format import DataFormatError

__all__ = ["holdout_inputs", "read_truth", "frame_positions", "temporal_stability", "TRUTH_FILE"]

TRUTH_FILE = Path("ground_truth") / "animal.csv"


def holdout_inputs(view_order: list[int], num_input_views: int, holdout: int) -> tuple[list[int], int]:
    """(input camera indices, the held-out camera's slot in the loader's view order: inputs first, then the rest)."""
    if holdout not in view_order:
        raise ValueError(f"eval.holdout_view: camera {holdout} is not one of the rig's views {view_order}")
    others = [view for view in view_order if view != holdout]
    if len(others) < num_input_views:
        raise ValueError(
            f"eval.holdout_view: holding camera {holdout} out leaves {len(others)} views, "
            f"the checkpoint needs {num_input_views} inputs"
        )
    inputs = others[:num_input_views]
    rest = [view for view in view_order if view not in inputs]
    return inputs, num_input_views + rest.index(holdout)


def read_truth(path: Path) -> dict[int, np.ndarray]:
    """``frame,com_x,com_y,com_z`` rows (world units) by source frame."""
    try:
        rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{path}: cannot read the animal's positions ({error})") from None
    if rows.shape[1] != 4:
        raise DataFormatError(f"{path}: expected 4 columns frame,x,y,z, found {rows.shape[1]}")
    return {int(row[0]): row[1:] for row in rows}


def _centroid(gaussians) -> torch.Tensor:
    weights = gaussians.opacities[0].double()
    return (weights[:, None] * gaussians.means[0].double()).sum(0) / weights.sum().clamp_min(1e-12)


def frame_positions(gaussians, batch: dict, b: int, slot: int, frame: int | None, truth: dict | None) -> dict:
    """One sample's predicted and true position: world units against the generator's truth when ``truth`` has this
    frame, else pixels of the held-out camera (``slot``) against its mask's centroid."""
    centroid = _centroid(gaussians[b])  # normalized frame
    if truth is not None and frame in truth and "world_from_normalized" in batch:
        matrix = batch["world_from_normalized"][b].double().cpu()
        world = (matrix[:3, :3] @ centroid.cpu() + matrix[:3, 3]).numpy()
        return {"position_units": "world", **_xyz("pred", world), **_xyz("true", truth[frame])}
    c2w = batch["c2w"][b, slot].double().cpu()
    fx, fy, cx, cy = batch["fxfycxcy"][b, slot].double().cpu().tolist()
    camera = torch.linalg.inv(c2w)[:3] @ torch.cat([centroid.cpu(), centroid.new_ones(1).cpu()])
    predicted = [fx * camera[0] / camera[2] + cx, fy * camera[1] / camera[2] + cy] if camera[2] > 0 else [math.nan] * 2
    alpha = batch["image"][b, slot, 3].double().cpu()
    mask = alpha > 0.5
    if mask.any():  # pixel centres at +0.5 (the intrinsics' convention)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        true = [float(xs.double().mean()) + 0.5, float(ys.double().mean()) + 0.5]
    else:
        true = [math.nan] * 2
    return {"position_units": "pixels", **_xyz("pred", [float(v) for v in predicted]), **_xyz("true", true)}


def _xyz(prefix: str, values) -> dict:
    return {f"{prefix}_{axis}": float(value) for axis, value in zip("xyz", values, strict=False)}


def temporal_stability(rows: list[dict]) -> dict:
    """Over consecutive source frames (a step of the recording's frame selection): the RMS difference between the
    prediction's and the truth's frame-to-frame motion, and the mean of each motion, in the rows' units."""
    rows = sorted((row for row in rows if row.get("frame") is not None), key=lambda row: row["frame"])
    units = {row["position_units"] for row in rows}
    if not rows or len(units) != 1:
        return {"pairs": 0, "note": "needs source frames and one kind of truth for every frame"}
    axes = [axis for axis in "xyz" if f"pred_{axis}" in rows[0]]
    frames = np.array([row["frame"] for row in rows])
    step = int(np.min(np.diff(frames))) if len(frames) > 1 else 0
    predicted = np.array([[row[f"pred_{a}"] for a in axes] for row in rows])
    true = np.array([[row[f"true_{a}"] for a in axes] for row in rows])
    pairs = [i for i in range(len(rows) - 1) if step > 0 and frames[i + 1] - frames[i] == step]
    motion_pred = np.array([predicted[i + 1] - predicted[i] for i in pairs]).reshape(-1, len(axes))
    motion_true = np.array([true[i + 1] - true[i] for i in pairs]).reshape(-1, len(axes))
    finite = np.isfinite(motion_pred).all(1) & np.isfinite(motion_true).all(1)
    motion_pred, motion_true = motion_pred[finite], motion_true[finite]
    if not len(motion_pred):
        return {"pairs": 0, "note": "no two consecutive frames with a position"}
    difference = np.linalg.norm(motion_pred - motion_true, axis=1)
    return {
        "pairs": len(motion_pred),
        "frame_step": step,
        "units": units.pop(),
        "motion_error_rms": float(np.sqrt(np.mean(difference**2))),
        "true_motion_mean": float(np.linalg.norm(motion_true, axis=1).mean()),
        "predicted_motion_mean": float(np.linalg.norm(motion_pred, axis=1).mean()),
        "position_error_mean": float(
            np.linalg.norm(predicted - true, axis=1)[np.isfinite(predicted - true).all(1)].mean()
        ),
    }
