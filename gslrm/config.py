"""Config plumbing shared by train.py, eval.py and the tests: resolvers and typed instantiation."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["register_resolvers", "build", "default_precision", "coerce", "run_name", "launcher_option"]


def default_precision() -> str:
    """bf16 autocast on GPUs that support it (as FaceLift), full fp32 elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def run_name(time_format: str) -> str:
    """A run directory's name: ``slurm-<job>`` in an sbatch job, so that the attempt SLURM starts after a requeue
    (or a node failure) finds the run it continues, and every rank of ``srun python train.py trainer=ddp`` agrees
    on it; else the start time, as Hydra's ``${now:...}``."""
    from datetime import datetime

    from gslrm import slurm

    return f"slurm-{slurm.job_id()}" if slurm.is_batch_job() else datetime.now().strftime(time_format)


def launcher_option(key: str, default: Any) -> Any:
    """``hydra.launcher.<key>`` in a job's config (the job config has no ``hydra`` node to interpolate), or
    ``default`` when the launcher has no such option (the basic launcher, a plain sbatch run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return default
    return HydraConfig.get().launcher.get(key, default)


def register_resolvers() -> None:
    for name, function, cached in (("gslrm_precision", default_precision, False),
                                   ("gslrm_run_name", run_name, True),  # one value per run, as ${now:}
                                   ("gslrm_launcher", launcher_option, False)):  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cached)


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
