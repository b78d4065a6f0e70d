"""Offline-safe loading of pretrained weights for the frozen loss networks (no download ever happens at run time)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["MissingWeightsError", "hub_checkpoint", "load_state_dict"]


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says what to put where (one line)."""


def hub_checkpoint(filename: str) -> Path:
    """Where torch hub caches ``filename`` (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_state_dict(configured: str | None, filename: str, what: str, config_key: str) -> dict:
    """Load ``configured`` if set, else the torch hub cache copy of ``filename``; never download."""
    path = Path(os.path.expanduser(configured)) if configured else hub_checkpoint(filename)
    if not path.is_file():
        raise MissingWeightsError(
            f"{what} weights not found at {path}: copy {filename} there (or set {config_key}=/path/to/{filename}); "
            "this machine cannot download them"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
