"""``ViewDataset``: calibrated multi-view samples in FaceLift's batch format, normalized into its frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.data import Dataset

from gslrm.config import coerce
from gslrm.data.cache import SampleCache
from gslrm.data.format import (
    CAMERAS_FILE,
    ORBIT_DIR,
    SUPERVISION_DIR,
    DataFormatError,
    Frame,
    read_cameras,
    read_split,
)
from gslrm.data.images import (
    crop_resize,
    crop_resize_depth,
    crop_resize_map,
    foreground_window,
    load_rgba,
    square_window,
)
from gslrm.data.maps import (
    CONFIDENCE_KINDS,
    DEPTH_KINDS,
    MapConfig,
    find_map,
    read_map,
    resize_map,
    to_confidence,
    to_disparity,
)
from gslrm.data.resolution import ResolutionSchedule
from gslrm.rig import NormalizationConfig, fit_rig_transform
from gslrm.session.world import world_from_normalized

log = logging.getLogger(__name__)

__all__ = ["DataConfig", "ViewDataset", "ViewBatch", "split_file"]

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}


class Background(StrEnum):
    """The colour the data's images are composited on (RGBA images) or recognised by (RGB images)."""

    white = "white"
    black = "black"
    gray = "gray"
    grey = "grey"


class Square(StrEnum):
    crop = "crop"  # the centre square
    pad = "pad"  # the whole image on a square of background


# raise: a bad sample stops the run, naming the file and the field; skip: bad samples are skipped, counted and
# warned about once. (The functional form: a member cannot be spelled ``raise`` in a class body, and configs choose
# members by name.)
OnError = StrEnum("OnError", {"raise": "raise", "skip": "skip"})


@dataclass
class DataConfig:
    """Everything about the data; ``conf/data/*.yaml`` fills it (unknown keys fail at start-up)."""

    root: str | None = None
    generate: bool = False  # generate the rodent dataset into ``root`` if it is missing (``data=rodent``)
    generator: dict = field(default_factory=dict)  # arguments for gslrm.data.rodent.generate
    train_list: str | None = None  # override ROOT/train.txt (FaceLift list files of absolute paths work)
    val_list: str | None = None
    test_list: str | None = None
    image_size: int = 128
    # progressive resolution: [[step, size], ...] trains at ``size`` from optimizer step ``step`` on (resolution.py)
    image_size_schedule: list[list[int]] = field(default_factory=list)
    num_views: int = 6  # views per sample that the rig must have
    num_input_views: int = 4
    input_views: list[int] | None = None  # explicit input frame indices (default: the first num_input_views)
    view_order: list[int] | None = None  # frame indices to use, in order (default: all, as stored)
    random_view_selection: bool = False  # shuffle which views are inputs (off: it blurred predictions on mouse rigs)
    square: Square = Square.crop  # non-square raw images
    recenter: bool = False  # crop every view around its foreground, one zoom for the sample
    recenter_margin: float = 0.15
    background: Background = Background.white
    mask_threshold: float = 250.0
    load_depth: bool = False  # also return depth [V,1,H,W] from <sample>/depth/<image stem>.npy
    # also return <sample>/orbit/'s held-out views as orbit_*; null: when the split's first sample has them
    load_orbit: bool | None = False
    # training only: this many views drawn at random (anew each time) from <sample>/supervision/, appended as targets
    # after the rig's views (never inputs); the rodent generator writes them with generator.supervision_views
    supervision_views: int = 0
    depth_maps: MapConfig | None = None  # precomputed depth priors -> depth_prior [V,1,H,W] (disparity)
    confidence_maps: MapConfig | None = None  # precomputed confidence/uncertainty -> confidence [V,1,H,W]
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    on_error: OnError = OnError["raise"]
    batch_size: int = 2
    val_batch_size: int = 1
    num_workers: int = 2
    persistent_workers: bool = True
    # decoded train/val samples kept in memory by each loader process, in MB (0: read from disk every time); samples
    # drawn anew each time (random_view_selection, supervision_views) are never kept (gslrm/data/cache.py)
    cache_mb: float = 1024.0
    pin_memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # mappings come from code and tests; composed configs arrive as dataclasses already
        self.normalization = coerce(NormalizationConfig, self.normalization)
        if self.depth_maps is not None:
            self.depth_maps = coerce(MapConfig, self.depth_maps).resolved("data.depth_maps", DEPTH_KINDS)
        if self.confidence_maps is not None:
            self.confidence_maps = coerce(MapConfig, self.confidence_maps).resolved(
                "data.confidence_maps", CONFIDENCE_KINDS
            )
        ResolutionSchedule.parse(self.image_size_schedule, self.image_size)  # a bad entry fails at start-up
        if self.cache_mb < 0:
            raise ValueError(f"data.cache_mb: must be >= 0 (0: no cache), not {self.cache_mb}")
        if not 0 < self.num_input_views <= self.num_views:
            raise ValueError(f"data.num_input_views: must be in 1..num_views={self.num_views}")
        if self.supervision_views < 0:
            raise ValueError(f"data.supervision_views: must be >= 0, not {self.supervision_views}")
        if self.supervision_views and (self.depth_maps is not None or self.confidence_maps is not None):
            raise ValueError("data.supervision_views: not with data.depth_maps or data.confidence_maps (no maps there)")

    @property
    def background_rgb(self) -> np.ndarray:
        return np.asarray(BACKGROUNDS[self.background], dtype=np.float32)


class ViewBatch(TypedDict, total=False):
    """One sample (the DataLoader adds the leading batch dim). Views: inputs first, then the other targets."""

    image: Float[Tensor, "v 4 h w"]  # RGB composited on bg_color + alpha, in [0, 1]
    c2w: Float[Tensor, "v 4 4"]  # OpenCV camera->world, normalized frame
    fxfycxcy: Float[Tensor, "v 4"]  # pixels of ``image``
    index: Int[Tensor, "v 2"]  # (frame index in opencv_cameras.json, sample index)
    bg_color: Float[Tensor, "3"]
    depth: Float[Tensor, "v 1 h w"]  # z-depth in normalized units, 0 = none (only with load_depth)
    depth_prior: Float[Tensor, "v 1 h w"]  # precomputed prior as disparity (only with depth_maps)
    confidence: Float[Tensor, "v 1 h w"]  # in [0, 1], 1 = trusted (only with confidence_maps)
    names: list[str]  # "<sample dir>/<file_path>" per view: the key of per-image caches
    orbit_image: Float[Tensor, "o 4 h w"]  # held-out views (only with load_orbit): never inputs, never supervised
    orbit_c2w: Float[Tensor, "o 4 4"]
    orbit_fxfycxcy: Float[Tensor, "o 4"]
    world_from_normalized: Float[Tensor, "4 4"]  # float64, back to the rig's frame (only with with_world_frame)


def append_views(batch: ViewBatch, views: dict) -> None:
    """Views (``load_views``' keys, ``index`` and ``names``) appended to ``batch``'s after its own, as targets."""
    for key, value in views.items():
        batch[key] = batch[key] + value if key == "names" else torch.cat([batch[key], value])


def split_file(config: DataConfig, split: str) -> Path:
    override = getattr(config, f"{split}_list", None)
    if override:
        return Path(override)
    if config.root is None:
        raise DataFormatError("data.root: not set (python train.py data=mouse data.root=/path/to/data)")
    return Path(config.root) / f"{split}.txt"


class ViewDataset(Dataset):
    """Samples of ``split`` in FaceLift's batch format (see :class:`ViewBatch`)."""

    def __init__(
        self, config: DataConfig, split: str = "train", samples: list[Path] | None = None, cache_mb: float = 0.0
    ) -> None:
        """The samples of ``split``'s list file, or ``samples`` (folders) in that order; up to ``cache_mb`` of them
        kept in memory once read, where a sample is the same every time it is read (the loaders of a fit pass
        ``data.cache_mb``; one pass over a split, as predict.py's, gains nothing from it)."""
        self.config = config
        self.split = split
        root = Path(config.root) if config.root else Path(".")
        self.samples = read_split(root, split_file(config, split)) if samples is None else list(samples)
        # also return the similarity back to the rig's frame (``world_from_normalized``): predict.py stores it
        self.with_world_frame = False
        # read the input views only (predict.py: the other views are never used), unless data.recenter sizes every
        # view's window from all of them (then the inputs' crops need the others)
        self.inputs_only = False
        self.skipped: set[int] = set()
        self.rng = np.random.default_rng(config.seed)
        self.with_orbit = (  # null decides for the whole split: a batch mixing samples with and without cannot stack
            bool(self.samples) and (self.samples[0] / ORBIT_DIR / CAMERAS_FILE).is_file()
            if config.load_orbit is None
            else config.load_orbit
        )
        draws = split == "train" and (config.random_view_selection or config.supervision_views > 0)
        self.cache = SampleCache(0 if draws else int(cache_mb * 2**20))

    def __len__(self) -> int:
        return len(self.samples)

    def view_selection(self, frames: list[Frame], cameras_path: Path) -> list[int]:
        """Frame indices in output order: inputs first, then the remaining targets (all views are targets)."""
        config = self.config
        order = list(config.view_order) if config.view_order is not None else list(range(len(frames)))
        if len(order) != config.num_views:
            raise DataFormatError(
                f"{cameras_path}: frames: {len(order)} views but data.num_views={config.num_views} "
                "(set data.num_views or data.view_order)"
            )
        if any(not 0 <= i < len(frames) for i in order):
            raise DataFormatError(f"{cameras_path}: frames: data.view_order {order} outside 0..{len(frames) - 1}")
        # training only: validation and eval keep the fixed inputs, so that a recipe's curve and eval.py's figures
        # score the same views (with random val inputs the curve moved by 0.1 IoU with the draw)
        if config.random_view_selection and self.split == "train":
            inputs = [int(i) for i in self.rng.choice(order, config.num_input_views, replace=False)]
        elif config.input_views is not None:
            inputs = list(config.input_views)
        else:
            inputs = order[: config.num_input_views]
        return inputs + [i for i in order if i not in inputs]

    def load(self, index: int) -> ViewBatch:
        config = self.config
        sample_dir = self.samples[index]
        cameras_path = sample_dir / CAMERAS_FILE
        frames = read_cameras(cameras_path)
        selected = self.view_selection(frames, cameras_path)
        if self.inputs_only and not config.recenter:
            selected = selected[: config.num_input_views]
        background = config.background_rgb

        raw_images, raw_depths, raw_maps = [], [], []
        for i in selected:
            frame = frames[i]
            rgba = self.read_image(cameras_path, frames, i)
            raw_images.append(rgba)
            raw_maps.append(self.read_maps(sample_dir, frame.file_path, rgba.shape[:2]))
            if config.load_depth:
                depth_path = sample_dir / "depth" / (Path(frame.file_path).stem + ".npy")
                if not depth_path.is_file():
                    raise DataFormatError(f"{depth_path}: depth: file not found (data.load_depth=true)")
                raw_depths.append(np.load(depth_path).astype(np.float32))

        if config.recenter:
            windows = foreground_window([image[..., 3] for image in raw_images], config.recenter_margin)
        else:
            windows = [square_window(frames[i].width, frames[i].height, config.square) for i in selected]

        raw_c2w = np.stack([f.c2w for f in frames])  # every frame: the rig fit uses all cameras, not only the selected
        transform = fit_rig_transform(raw_c2w, config.normalization)
        c2w_all, intrinsics_all = transform.apply(raw_c2w, np.stack([f.fxfycxcy for f in frames]))

        images, intrinsics, depths, maps = [], [], [], {}
        for slot, i in enumerate(selected):
            image, k = crop_resize(raw_images[slot], intrinsics_all[i], windows[slot], config.image_size, background)
            images.append(image)
            intrinsics.append(k)
            if config.load_depth:
                depths.append(
                    crop_resize_depth(raw_depths[slot], windows[slot], config.image_size) * transform.depth_scale()
                )
            for key, (array, mode) in raw_maps[slot].items():
                maps.setdefault(key, []).append(crop_resize_map(array, windows[slot], config.image_size, mode))

        batch: ViewBatch = {
            "image": torch.from_numpy(np.stack(images)),
            "c2w": torch.from_numpy(c2w_all[selected]).float(),
            "fxfycxcy": torch.from_numpy(np.stack(intrinsics)).float(),
            "index": torch.tensor([[i, index] for i in selected], dtype=torch.long),
            "bg_color": torch.from_numpy(background.copy()),
        }
        if config.load_depth:
            batch["depth"] = torch.from_numpy(np.stack(depths))[:, None]
        for key, arrays in maps.items():
            batch[key] = torch.from_numpy(np.stack(arrays))[:, None]
        batch["names"] = [f"{sample_dir}/{frames[i].file_path}" for i in selected]
        if config.supervision_views and self.split == "train":
            append_views(batch, self.load_supervision(sample_dir, index, transform))
        if self.with_world_frame:
            batch["world_from_normalized"] = torch.from_numpy(world_from_normalized(transform))
        if self.with_orbit:
            batch.update(self.load_orbit(sample_dir, transform))
        return batch

    def read_image(self, cameras_path: Path, frames: list[Frame], i: int) -> np.ndarray:
        """Frame ``i``'s image as RGBA on the background, checked against the frame's w/h."""
        frame = frames[i]
        image_path = cameras_path.parent / frame.file_path
        rgba = load_rgba(image_path, self.config.background_rgb, self.config.mask_threshold)
        if rgba.shape[:2] != (frame.height, frame.width):
            raise DataFormatError(
                f"{cameras_path}: frames[{i}].w/h: {frame.width}x{frame.height} but {image_path.name} is "
                f"{rgba.shape[1]}x{rgba.shape[0]}"
            )
        return rgba

    def load_orbit(self, sample_dir: Path, transform) -> dict:
        """The held-out views of ``sample_dir/orbit/`` as ``orbit_*``."""
        cameras_path = sample_dir / ORBIT_DIR / CAMERAS_FILE
        frames = read_cameras(cameras_path)
        views = self.load_views(cameras_path, frames, list(range(len(frames))), transform, depth=False)
        return {f"orbit_{key}": value for key, value in views.items()}

    def load_supervision(self, sample_dir: Path, index: int, transform) -> dict:
        """``data.supervision_views`` views drawn at random from ``sample_dir/supervision/`` (the batch's keys)."""
        count = self.config.supervision_views
        cameras_path = sample_dir / SUPERVISION_DIR / CAMERAS_FILE
        if not cameras_path.is_file():
            raise DataFormatError(f"{cameras_path}: file not found (data.supervision_views={count})")
        frames = read_cameras(cameras_path)
        if len(frames) < count:
            raise DataFormatError(
                f"{cameras_path}: frames: {len(frames)} views, fewer than data.supervision_views={count}"
            )
        chosen = sorted(int(i) for i in self.rng.choice(len(frames), count, replace=False))
        views = self.load_views(cameras_path, frames, chosen, transform, depth=self.config.load_depth)
        # (frame, sample) as the rig's views, with frames counted -1, -2, ...: not frames of opencv_cameras.json
        views["index"] = torch.tensor([[-1 - i, index] for i in chosen], dtype=torch.long)
        views["names"] = [f"{cameras_path.parent}/{frames[i].file_path}" for i in chosen]
        return views

    def load_views(self, cameras_path: Path, frames: list[Frame], chosen: list[int], transform, depth: bool) -> dict:
        """Frames ``chosen`` of ``frames`` (read from ``cameras_path``: views beside the rig's, the orbit or the
        supervision views) in the frame the rig's transform normalizes to, cropped as the rig views are (around the
        animal with one zoom for them, or the square window): ``image``, ``c2w``, ``fxfycxcy`` (and ``depth``)."""
        config = self.config
        raw_images = [self.read_image(cameras_path, frames, i) for i in chosen]
        if config.recenter:
            windows = foreground_window([image[..., 3] for image in raw_images], config.recenter_margin)
        else:
            windows = [square_window(frames[i].width, frames[i].height, config.square) for i in chosen]
        c2w, intrinsics = transform.apply(
            np.stack([frames[i].c2w for i in chosen]), np.stack([frames[i].fxfycxcy for i in chosen])
        )
        cropped = [
            crop_resize(image, k, window, config.image_size, config.background_rgb)
            for image, k, window in zip(raw_images, intrinsics, windows, strict=True)
        ]
        views = {
            "image": torch.from_numpy(np.stack([image for image, _ in cropped])),
            "c2w": torch.from_numpy(c2w).float(),
            "fxfycxcy": torch.from_numpy(np.stack([k for _, k in cropped])).float(),
        }
        if depth:
            depths = []
            for i, window in zip(chosen, windows, strict=True):
                depth_path = cameras_path.parent / "depth" / (Path(frames[i].file_path).stem + ".npy")
                if not depth_path.is_file():
                    raise DataFormatError(f"{depth_path}: depth: file not found (data.load_depth=true)")
                raw = np.load(depth_path).astype(np.float32)
                depths.append(crop_resize_depth(raw, window, config.image_size) * transform.depth_scale())
            views["depth"] = torch.from_numpy(np.stack(depths))[:, None]
        return views

    def read_maps(self, sample_dir: Path, image_file: str, shape: tuple[int, int]) -> dict:
        """Precomputed maps of one image at its raw size: {batch key: (array, resize mode)}."""
        maps = {}
        depth, confidence = self.config.depth_maps, self.config.confidence_maps
        if depth is not None:
            array = resize_map(
                read_map(find_map(sample_dir, image_file, depth, "data.depth_maps"), depth.png_scale), *shape
            )
            maps["depth_prior"] = (to_disparity(array, depth.kind), "bilinear")
        if confidence is not None:
            path = find_map(sample_dir, image_file, confidence, "data.confidence_maps")
            array = resize_map(read_map(path, confidence.png_scale), *shape)
            maps["confidence"] = (
                to_confidence(array, confidence.kind, confidence.uncertainty_to_confidence),
                "bilinear",
            )
        return maps

    def __getitem__(self, index: int) -> ViewBatch | None:
        key = (index, self.with_world_frame, self.inputs_only)  # the flags predict.py sets change what is read
        try:
            sample = self.cache.get(key)
            if sample is None:
                sample = self.load(index)
                self.cache.put(key, sample)
            return sample
        except DataFormatError as error:
            if self.config.on_error == "raise":
                raise
            if index not in self.skipped:  # warn once per sample, never substitute another sample
                self.skipped.add(index)
                log.warning("skipping sample %s (%s)", self.samples[index], error)
            return None
