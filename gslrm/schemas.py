"""The dataclass every config group is checked against, registered in Hydra's ConfigStore as ``<group>/schema``.

A YAML option of a group starts from its schema (``defaults: [schema, _self_]``) and holds only what differs; the
entry points and the tests call :func:`register_configs` before composing (``gslrm/config.py`` says why).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from gslrm.config import register_resolvers
from gslrm.data.dataset import DataConfig
from gslrm.evaluate import EvalConfig
from gslrm.lit.optim import OptimConfig
from gslrm.losses.computer import LossConfig
from gslrm.model.gslrm import ModelConfig
from gslrm.refine import RefineConfig
from gslrm.render import RenderConfig
from gslrm.session.config import PredictConfig
from gslrm.view.viewer import ViewerConfig

__all__ = ["SCHEMAS", "register_configs", "compose"]

SCHEMAS: dict[str, object] = {
    # data.root has no default in configs (a YAML option must give it, or the user: data.root=...); code and tests
    # that build DataConfig directly keep None (lists of absolute paths need no root)
    "data": DataConfig(root=MISSING),
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "render": RenderConfig,
    "eval": EvalConfig,
    "refine": RefineConfig,
    "predict": PredictConfig,
    "viewer": ViewerConfig,
}


def register_configs() -> None:
    """The YAML's resolvers, and ``<group>/schema`` for every group of :data:`SCHEMAS` (idempotent)."""
    register_resolvers()
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, composed as the entry points compose it (schemas checked):
    for code that runs an entry point's function in-process (the benchmarks, the tests)."""
    from pathlib import Path

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
