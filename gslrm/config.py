"""Config plumbing shared by the entry points and the tests: the resolvers, and turning a composed node into its
dataclass (and a stored mapping back into one).

Every config group that configures our own code (``data``, ``model``, ``loss``, ``optim``, ``render``, and the
``eval``, ``refine`` and ``viewer`` nodes of the other entry points) is a dataclass registered in Hydra's ConfigStore
as ``<group>/schema`` (``gslrm/schemas.py``); each YAML option starts from it (``defaults: [schema, _self_]``) and holds only what differs.
Composition therefore checks every key, type and choice (choices are ``StrEnum`` fields) before any code runs: a typo
or a wrong value ends the run naming its key. Trainer, callbacks and loggers stay ``_target_`` nodes: they are
Lightning's classes, configured with Lightning's own arguments.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "register_resolvers",
    "build",
    "plain",
    "default_precision",
    "cpu_has_native_bf16",
    "coerce",
    "run_name",
    "launcher_option",
]


def default_precision(cpu: str = "fp32") -> str:
    """``${gslrm_precision:}``: bf16 autocast on GPUs that support it (as FaceLift), full fp32 elsewhere.
    ``${gslrm_precision:bf16_if_native}``: bf16 autocast also on a CPU with bf16 instructions (AVX512-BF16 or AMX),
    where the transformer's steps ran 1.26x faster at 64 px; a CPU without them would emulate bf16 (expected slower
    than fp32, not measured), so it keeps fp32 (docs/performance.md#bf16-on-a-cpu)."""
    if cpu not in ("fp32", "bf16_if_native"):
        raise ValueError(f"gslrm_precision: expected fp32 or bf16_if_native, got {cpu!r}")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    if cpu == "bf16_if_native" and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU's flags (Linux's /proc/cpuinfo) list bf16 arithmetic: ``avx512_bf16`` or ``amx_bf16``.
    False where the file is missing (not Linux): fp32 is the choice that is never slow."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


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


def slurm_layout(key: str, default: int) -> int:
    """``${gslrm_slurm:nodes,1}`` / ``${gslrm_slurm:tasks_per_node,-1}``: the job step's layout where the ranks come
    from SLURM (conf/trainer/ddp.yaml), else ``default``. Resolved in the job, not where a sweep is submitted."""
    from gslrm import slurm

    readers = {"nodes": slurm.num_nodes, "tasks_per_node": slurm.tasks_per_node}
    if key not in readers:
        raise ValueError(f"gslrm_slurm: unknown key {key!r} (one of {', '.join(readers)})")
    return readers[key](default)


def resolution_switches(schedule) -> list[int]:
    """``${gslrm_switches:${data.image_size_schedule}}``: the steps > 0 where the schedule changes the image size
    (conf/optim/cpu.yaml restarts the learning rate there). An entry that is not a [step, size] pair is left for
    ``data.image_size_schedule``'s own check to name."""
    steps = []
    for entry in schedule or []:
        if len(entry) == 2 and isinstance(entry[0], int) and entry[0] > 0:
            steps.append(int(entry[0]))
    return steps


def register_resolvers() -> None:
    """The resolvers the YAML uses (``gslrm.schemas.register_configs`` registers them with the schemas)."""
    resolvers = (
        ("gslrm_precision", default_precision, False),
        ("gslrm_run_name", run_name, True),  # one value per run, as ${now:}
        ("gslrm_launcher", launcher_option, False),
        ("gslrm_slurm", slurm_layout, False),
        ("gslrm_switches", resolution_switches, False),
    )
    for name, function, cached in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cached)


class ConfigValueError(ValueError):
    """A value that a config's own checks reject (``optim.restart_peak=2``): the entry points end on its one line."""


def build(node: DictConfig) -> Any:
    """A composed config group as its dataclass (its ``__post_init__`` checks what types cannot: ranges, and
    fields that must agree; a rejected value is a ConfigValueError naming its key). A mandatory value left unset
    (``???``) fails naming its key."""
    from omegaconf.errors import MissingMandatoryValue

    missing = sorted(OmegaConf.missing_keys(node))  # full keys (data.root), as the user writes them
    if missing:
        raise MissingMandatoryValue(f"Missing mandatory value: {missing[0]}")
    try:
        return OmegaConf.to_object(node)
    except ValueError as error:  # only the dataclasses' __post_init__ raise it here, their messages name the key
        raise ConfigValueError(str(error)) from None


def plain(config: Any) -> dict:
    """A config dataclass as plain Python values (choices as their strings): what checkpoints and JSON reports
    store, readable with ``torch.load(weights_only=True)`` and without gslrm."""
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)


def coerce(kind: type, value: Any, key: str = "") -> Any:
    """Build dataclass ``kind`` from a mapping (code, tests, a checkpoint's stored config), checked against the schema
    as composition checks YAML: an unknown key, a wrong type or a bad choice is one ValueError naming ``key`` and
    the field. An instance passes through."""
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping for {kind.__name__}, got {value!r}")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise TypeError(f"{kind.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind), value))
    except OmegaConfBaseException as error:
        message, *details = str(error).splitlines()
        field = next((line.split(":", 1)[1].strip() for line in details if "full_key:" in line), "")
        raise ValueError(f"{'.'.join(part for part in (key, field) if part)}: {message}") from None
