"""``python -m gslrm.view sequence=<predict.out>``: a stored sequence (predict.py) in the viewer, frame by frame.

Each frame is read from the store when it is shown (one zarr chunk, decoded, nothing kept), taken back to the
model's normalized frame (the rig centre at the origin, as the viewer shows a prediction), with the rig's cameras of
that frame (its sample's ``opencv_cameras.json``, through the same similarity) and their photographs on the
frustums, the model's input cameras first. A store whose data folder has moved still plays, without cameras.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from gslrm.data.format import CAMERAS_FILE, DataFormatError, read_cameras
from gslrm.model.gaussians import Gaussians
from gslrm.session.store import SequenceStore
from gslrm.session.world import normalized_from_world, normalized_gaussians
from gslrm.view.viewer import Timeline, ViewScene

log = logging.getLogger(__name__)

__all__ = ["SequenceSource"]


class SequenceSource:
    def __init__(self, root: str | Path, image_height: int = 128) -> None:
        store_root = Path(root)
        if not (store_root / "manifest.json").is_file():
            raise FileNotFoundError(f"sequence: {store_root}: no predict.py store here (manifest.json not found)")
        self.store = SequenceStore(store_root)
        manifest = self.store.manifest()
        group = self.store.group()
        self.samples: list[str] = list(group.attrs["samples"])
        self.frames = group["frame"][:]
        self.times = group["time"][:]
        self.matrices = group["world_from_normalized"][:]
        identity = manifest["identity"]
        self.data_root = Path(identity["data_root"]) if identity.get("data_root") else None
        self.inputs: list[int] = list(identity.get("input_views") or [])
        self.image_height = image_height
        if self.data_root is None or not self.data_root.is_dir():
            log.warning("sequence: the data folder %s is not here: frames without cameras", self.data_root)

    def timeline(self, fps: float | None = None) -> Timeline:
        return Timeline(len(self.samples), self.scene, fps or self.store.playback_fps(), self.label)

    def label(self, position: int) -> str:
        time = self.times[position]
        when = f", {time:.3f} s" if math.isfinite(time) else ""
        return f"frame {int(self.frames[position])}{when} ({position + 1} of {len(self.samples)})"

    def scene(self, position: int) -> ViewScene:
        frame = self.store.read_frame(position)
        matrix = self.matrices[position]
        name = self.samples[position]
        if frame["count"] < 0:  # skipped by predict.on_error=skip: nothing to draw
            empty = torch.zeros(1, 0, 3)
            gaussians = Gaussians.from_colors(empty, empty, torch.zeros(1, 0, 4), torch.zeros(1, 0), empty)
            return ViewScene(f"{name} (skipped)", gaussians)
        gaussians = normalized_gaussians(frame, matrix)
        cameras = self._cameras(name, matrix)
        if cameras is None:
            return ViewScene(name, gaussians)
        c2w, fxfycxcy, images = cameras
        return ViewScene(name, gaussians, c2w, fxfycxcy, images, num_inputs=len(self.inputs))

    def _cameras(self, name: str, matrix: np.ndarray):
        """The frame's cameras in the normalized frame (inputs first) and their photographs, ``image_height`` high."""
        from PIL import Image

        if self.data_root is None:
            return None
        sample = self.data_root / name
        try:
            frames = read_cameras(sample / CAMERAS_FILE)
        except (DataFormatError, OSError) as error:
            log.warning("sequence: %s: no cameras (%s)", sample, error)
            return None
        inverse = normalized_from_world(matrix)
        scale = float(np.cbrt(np.linalg.det(inverse[:3, :3])))
        order = [v for v in self.inputs if v < len(frames)] + [v for v in range(len(frames)) if v not in self.inputs]
        c2ws, intrinsics, images = [], [], []
        for view in order:
            camera = frames[view]
            c2w = inverse @ camera.c2w
            c2w[:3, :3] /= scale  # a rotation again: the similarity's scale moves the centre only
            height = self.image_height
            width = max(1, round(camera.width * height / camera.height))
            try:
                with Image.open(sample / camera.file_path) as photo:
                    rgba = np.asarray(photo.convert("RGBA").resize((width, height), Image.BILINEAR), np.float32) / 255
            except OSError as error:
                log.warning("sequence: %s: %s", sample / camera.file_path, error)
                rgba = np.ones((height, width, 4), np.float32)
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # on white, as the viewer's data background
            images.append(np.concatenate([rgb, rgba[..., 3:]], -1).transpose(2, 0, 1))
            factor = np.array([width / camera.width, height / camera.height] * 2)
            intrinsics.append(camera.fxfycxcy * factor)
            c2ws.append(c2w)
        as_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).float()  # noqa: E731
        return as_tensor(c2ws), as_tensor(intrinsics), as_tensor(images)
