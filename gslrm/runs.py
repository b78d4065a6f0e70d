"""Run directories: the printed/saved config tree, ``ckpt_path=last`` and the wandb id of a resumed run."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gslrm.lit.callbacks import WANDB_ID_FILE

log = logging.getLogger(__name__)

__all__ = ["save_config_tree", "resolve_checkpoint", "wandb_id_for", "one_line_errors"]


def save_config_tree(cfg: DictConfig, output_dir: Path) -> None:
    """Print the resolved config as a tree (rank 0) and save it as ``config_resolved.yaml`` in the run dir."""
    import os

    from rich.console import Console
    from rich.tree import Tree

    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tree = Tree("config", guide_style="dim")
    for group, value in resolved.items():
        branch = tree.add(f"[bold]{group}")
        branch.add(OmegaConf.to_yaml(value) if isinstance(value, dict | list) else str(value))
    Console().print(tree)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved))


def resolve_checkpoint(ckpt_path: str | None, task_dir: Path) -> str | None:
    """``last`` = the newest ``checkpoints/last.ckpt`` under this task's runs (and sweeps); else the path itself."""
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path: {ckpt_path}: file not found")
        return str(ckpt_path)
    candidates = sorted(task_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"ckpt_path=last: no checkpoints/last.ckpt under {task_dir}")
    log.info("resuming from %s", candidates[-1])
    return str(candidates[-1])


def wandb_id_for(ckpt_path: str) -> str | None:
    """The wandb run id recorded beside the checkpoint, so the resumed run continues the same wandb run."""
    id_file = Path(ckpt_path).parent / WANDB_ID_FILE
    return id_file.read_text().strip() if id_file.is_file() else None


@contextmanager
def one_line_errors(*also: type[BaseException]):
    """For the entry points (train.py, eval.py, refine.py): a user's mistake (bad data, missing weights, a config
    typo or missing value, a missing file, and the script's own ``also`` kinds) ends the run with exit code 1 and the
    error's one line in the log, not a deep traceback."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    from gslrm.data.format import DataFormatError
    from gslrm.losses.weights import MissingWeightsError

    kinds = (DataFormatError, MissingWeightsError, InstantiationException, FileNotFoundError, MissingMandatoryValue)
    try:
        yield
    except kinds + also as error:
        lines = str(error).splitlines()
        # Hydra wraps a failed instantiation; its last line is the cause
        log.error("%s", lines[-1] if isinstance(error, InstantiationException) else lines[0])
        raise SystemExit(1) from None
