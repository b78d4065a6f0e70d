"""Depth estimators. Every prior is in MiDaS's convention: relative inverse depth ("disparity"), larger = closer.

- ``midas``: MiDaS (``DPT_Hybrid`` by default) built from a local checkout of its torch.hub repository (the hub cache's
  ``intel-isl_MiDaS_master`` or ``repo_dir``) with weights from the hub checkpoint cache or ``weights_path``; nothing is
  downloaded. Inputs in [0, 1] are mapped to [-1, 1], resized to 384x512, and the output resized back (bicubic).
  Frozen and in eval mode; gradients flow to the input only when the caller enables them (the pseudo-view term).
- ``ground_truth``: 1 / z of the rendered depth maps the rodent generator writes (``data.load_depth=true``).
- ``precomputed``: maps read by the dataset (``data.depth_maps``), already converted to disparity.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from gslrm.weights import MissingWeightsError, hub_checkpoint, load_state_dict

__all__ = ["MidasConfig", "MidasEstimator", "load_midas", "disparity_from_depth", "DepthEstimator", "MIDAS_WEIGHTS"]


class DepthEstimator(StrEnum):
    """Where a view's depth prior comes from."""

    midas = "midas"  # MiDaS on the photo (local code and weights)
    precomputed = "precomputed"  # data.depth_maps beside the dataset
    ground_truth = "ground_truth"  # the data's depth (data.load_depth=true): synthetic data only


MIDAS_WEIGHTS = {  # the files MiDaS's hubconf downloads into the hub checkpoint cache
    "DPT_Large": "dpt_large_384.pt",
    "DPT_Hybrid": "dpt_hybrid_384.pt",
    "MiDaS": "midas_v21_384.pt",
    "MiDaS_small": "midas_v21_small_256.pt",
}


@dataclass
class MidasConfig:
    model: str = "DPT_Hybrid"
    # a checkout of github.com/isl-org/MiDaS (default: <torch hub dir>/intel-isl_MiDaS_master)
    repo_dir: str | None = None
    weights_path: str | None = None  # the model's .pt (default: <torch hub dir>/checkpoints/<MiDaS's file name>)
    input_height: int = 384
    input_width: int = 512


def load_midas(config: MidasConfig, config_key: str = "loss.midas") -> nn.Module:
    """MiDaS from local code and weights, or a one-line MissingWeightsError saying what to place where."""
    from gslrm.weights import ensure

    repo = (
        Path(config.repo_dir).expanduser()
        if config.repo_dir
        else ensure("midas_repo", f"{config_key}.repo_dir=/path/to/MiDaS")
    )
    if not (repo / "hubconf.py").is_file():
        raise MissingWeightsError(
            f"MiDaS code not found at {repo / 'hubconf.py'}: put a checkout of https://github.com/isl-org/MiDaS "
            f"there (or set {config_key}.repo_dir=/path/to/MiDaS)"
        )
    state = _midas_state(config, f"{config_key}.weights_path")
    try:
        net = torch.hub.load(str(repo), config.model, source="local", pretrained=False, trust_repo=True)
    except ImportError as error:  # DPT models need timm
        raise MissingWeightsError(
            f"MiDaS {config.model} needs the Python package {error.name}: pip install {error.name}"
        ) from None
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def _midas_state(config: MidasConfig, config_key: str) -> dict:
    """DPT_Hybrid (the default) is fetched on first use; the other MiDaS models must be in the hub cache already."""
    if config.weights_path or config.model == "DPT_Hybrid":
        return load_state_dict(config.weights_path, "midas", config_key)
    filename = MIDAS_WEIGHTS.get(config.model, f"{config.model}.pt")
    path = hub_checkpoint(filename)
    if not path.is_file():
        raise MissingWeightsError(
            f"MiDaS {config.model} weights not found at {path}: copy {filename} there (or set "
            f"{config_key}=/path/to/{filename})"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


class MidasEstimator(nn.Module):
    """images [n, 3, h, w] in [0, 1] -> disparity [n, 1, h, w]."""

    def __init__(self, config: MidasConfig, net: nn.Module | None = None, config_key: str = "loss.midas") -> None:
        super().__init__()
        self.config = config
        self.net = net if net is not None else load_midas(config, config_key)

    def train(self, mode: bool = True) -> MidasEstimator:
        return super().train(False)  # frozen: batch norm / dropout stay in eval mode

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n 1 h w"]:
        height, width = images.shape[-2:]
        x = images * 2.0 - 1.0
        x = F.interpolate(
            x, size=(self.config.input_height, self.config.input_width), mode="bicubic", align_corners=False
        )
        out = self.net(x)
        if out.dim() == 3:
            out = out[:, None]
        return F.interpolate(out, size=(height, width), mode="bicubic", align_corners=False)


def disparity_from_depth(depth: Tensor) -> Tensor:
    """1 / z where z > 0, else 0 (background: infinitely far), as a monocular estimator would say."""
    return torch.where(depth > 0, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
