"""Per-image maps stored beside a dataset: depth priors (depth or disparity) and confidence (or uncertainty).

A map is found for an image (its ``file_path`` in opencv_cameras.json) as: the optional JSON ``mapping`` file's entry for
the file path, its file name, or its stem; else ``<dir>/<image stem>.npy``, then ``.png``. ``dir`` is absolute or
relative to each sample directory. ``.npy`` holds float values; a 16-bit PNG's integers are multiplied by
``png_scale``; an 8-bit PNG is divided by 255. Maps of another size than their image are resized to it (bilinear).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gslrm.data.format import DataFormatError

__all__ = [
    "MapConfig",
    "MapKind",
    "UncertaintyMapping",
    "find_map",
    "read_map",
    "to_disparity",
    "to_confidence",
    "resize_map",
]


class MapKind(StrEnum):
    """What a map's values are. Depth priors: depth or disparity; confidence maps: confidence or uncertainty."""

    depth = "depth"
    disparity = "disparity"
    confidence = "confidence"
    uncertainty = "uncertainty"


DEPTH_KINDS = (MapKind.depth, MapKind.disparity)
CONFIDENCE_KINDS = (MapKind.confidence, MapKind.uncertainty)


class UncertaintyMapping(StrEnum):
    inverse = "inverse"  # 1 / (1 + u)
    one_minus = "one_minus"  # 1 - clamp(u, 0, 1)


@dataclass
class MapConfig:
    dir: str | None = None  # absolute, or relative to each sample directory
    mapping: str | None = None  # JSON {image file_path | file name | stem: map file (relative to dir)}
    kind: MapKind | None = None  # null: depth for data.depth_maps, confidence for data.confidence_maps
    png_scale: float = 1.0  # 16-bit PNG integer -> value (e.g. 0.001 for millimetres)
    uncertainty_to_confidence: UncertaintyMapping = UncertaintyMapping.inverse

    def resolved(self, key: str, kinds: tuple[MapKind, ...]) -> MapConfig:
        """This map config with its kind defaulted to ``kinds[0]``, checked to be one of ``kinds``."""
        kind = self.kind or kinds[0]
        if kind not in kinds:
            raise ValueError(f"{key}.kind: expected one of {', '.join(kinds)}, not {kind!r}")
        return replace(self, kind=MapKind(kind))


@lru_cache(maxsize=64)
def _mapping(path: str) -> dict[str, str]:
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataFormatError(f"{path}: mapping: cannot read a JSON object ({error})") from None
    if not isinstance(mapping, dict):
        raise DataFormatError(f"{path}: mapping: expected a JSON object of image name -> map file")
    return mapping


def find_map(sample_dir: Path, image_file: str, config: MapConfig, field: str) -> Path:
    """The map file of ``image_file`` (a frame's file_path) in ``sample_dir``; ``field`` names the config key."""
    if config.dir is None:
        raise DataFormatError(f"{field}.dir: not set")
    folder = Path(config.dir) if Path(config.dir).is_absolute() else sample_dir / config.dir
    image = Path(image_file)
    if config.mapping is not None:
        mapping_path = Path(config.mapping) if Path(config.mapping).is_absolute() else folder / config.mapping
        mapping = _mapping(str(mapping_path))
        for key in (image_file, image.name, image.stem):
            if key in mapping:
                path = folder / mapping[key]
                if not path.is_file():
                    raise DataFormatError(f"{mapping_path}: {key}: {path} not found")
                return path
        raise DataFormatError(f"{mapping_path}: no entry for {image_file} (tried the path, {image.name}, {image.stem})")
    for suffix in (".npy", ".png"):
        path = folder / (image.stem + suffix)
        if path.is_file():
            return path
    raise DataFormatError(f"{folder / image.stem}.npy: {field}: no map for {image_file} (.npy or .png)")


def read_map(path: Path, png_scale: float = 1.0) -> np.ndarray:
    """float32 [H, W] from .npy or PNG (16-bit x png_scale, 8-bit / 255)."""
    if path.suffix == ".npy":
        array = np.load(path)
    else:
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image)
        array = array.astype(np.float32) * (png_scale if array.dtype == np.uint16 else 1.0 / 255.0)
    array = np.asarray(array, dtype=np.float32).squeeze()
    if array.ndim != 2 or not np.isfinite(array).all():
        raise DataFormatError(f"{path}: map: expected a finite [H, W] array, got shape {array.shape}")
    return array


def resize_map(array: np.ndarray, height: int, width: int) -> np.ndarray:
    if array.shape == (height, width):
        return array
    tensor = torch.from_numpy(array)[None, None]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def to_disparity(array: np.ndarray, kind: str) -> np.ndarray:
    """Depth priors in MiDaS's convention: inverse depth, 0 where the depth is unknown (<= 0)."""
    if kind == "disparity":
        return array
    return np.where(array > 0, 1.0 / np.maximum(array, 1e-12), 0.0).astype(np.float32)


def to_confidence(array: np.ndarray, kind: str, method: str) -> np.ndarray:
    """Confidence in [0, 1] (1 = trusted) from a confidence or an uncertainty map."""
    if kind == "confidence":
        return np.clip(array, 0.0, 1.0)
    if method == "inverse":
        return 1.0 / (1.0 + np.maximum(array, 0.0))
    return 1.0 - np.clip(array, 0.0, 1.0)
