"""Config plumbing shared by train.py, eval.py and the tests: resolvers and typed instantiation."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["register_resolvers", "build", "default_precision", "coerce"]


def default_precision() -> str:
    """bf16 autocast on GPUs that support it (as FaceLift), full fp32 elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gslrm_precision"):
        OmegaConf.register_new_resolver("gslrm_precision", default_precision)


def build(node: DictConfig) -> Any:
    """Instantiate a config group into its typed dataclass (a YAML typo fails here naming the key)."""
    return instantiate(node, _convert_="all")


def coerce(kind: type, value: Any) -> Any:
    """Build dataclass ``kind`` from a mapping (unknown keys fail with their names), or pass an instance through."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping for {kind.__name__}, got {value!r}")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise TypeError(f"{kind.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return kind(**value)
