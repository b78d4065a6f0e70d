"""Loading pretrained weights for the frozen networks: a configured path as it is, else the ecosystem's cache, where
``gslrm.weights.download`` fetches the file on first use when the network allows (``python -m gslrm.weights fetch`` does
it ahead of time for offline clusters)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gslrm.weights.download import ensure
from gslrm.weights.errors import MissingWeightsError

__all__ = ["hub_checkpoint", "load_state_dict", "weights_path"]


def hub_checkpoint(filename: str) -> Path:
    """Where torch hub caches ``filename`` (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_path(configured: str | None, name: str, config_key: str) -> Path:
    """``configured`` if set (a user's path: never downloaded over), else the cached file of the registry's
    ``name``, downloaded first if it is missing and the network allows."""
    if configured:
        path = Path(os.path.expanduser(configured))
        if not path.is_file():
            raise MissingWeightsError(f"{config_key}={configured}: file not found")
        return path
    return ensure(name, f"{config_key}=/path/to/file")


def load_state_dict(configured: str | None, name: str, config_key: str) -> dict:
    state = torch.load(weights_path(configured, name, config_key), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
