"""Run directories: the printed/saved config tree, ``ckpt_path=last`` and the wandb id of a resumed run."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gslrm.lit.callbacks import WANDB_ID_FILE

log = logging.getLogger(__name__)

__all__ = [
    "save_config_tree",
    "resolve_checkpoint",
    "newest_readable_checkpoint",
    "wandb_id_for",
    "one_line_errors",
    "UnreadableCheckpointError",
    "reason",
    "lost_peer",
]


def save_config_tree(cfg: DictConfig, output_dir: Path) -> None:
    """Print the resolved config as a tree (rank 0) and save it as ``config_resolved.yaml`` in the run dir."""
    from rich.console import Console
    from rich.tree import Tree

    from gslrm import slurm

    if slurm.global_rank() != 0:  # one writer for the run directory, which every node shares
        return
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tree = Tree("config", guide_style="dim")
    for group, value in resolved.items():
        branch = tree.add(f"[bold]{group}")
        branch.add(OmegaConf.to_yaml(value) if isinstance(value, dict | list) else str(value))
    Console().print(tree)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved))


class UnreadableCheckpointError(FileNotFoundError):
    """An explicitly named checkpoint that cannot be read (one line naming it)."""


def _step_of(path: Path) -> int:
    """Training step in ModelCheckpoint's ``step_0000500.ckpt`` names (-1 for others, e.g. ``last.ckpt``)."""
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return int(digits) if path.stem.startswith("step_") and digits else -1


def newest_readable_checkpoint(folder: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest (modification time, then step) readable ``*.ckpt`` of ``folder``, and the newer unreadable ones
    passed over with the reason. Older files are not read: checking one means reading all of it (CRCs), and a run
    of FaceLift's size keeps several multi-GB checkpoints."""
    from gslrm.lit.checkpoint_io import unreadable_reason

    files = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, _step_of(p)), reverse=True)
    passed_over = []
    for path in files:
        reason = unreadable_reason(path)
        if reason is None:
            return path, passed_over
        passed_over.append((path, reason))
    return None, passed_over


def resolve_checkpoint(ckpt_path: str | None, task_dir: Path) -> str | None:
    """``last``: the newest readable checkpoint of the newest run of this task (runs and sweeps), warning about
    each unreadable file passed over; else the path itself, which must exist and be readable."""
    from gslrm.lit.checkpoint_io import unreadable_reason

    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path: {ckpt_path}: file not found")
        reason = unreadable_reason(ckpt_path)
        if reason is not None:
            raise UnreadableCheckpointError(f"ckpt_path: {ckpt_path}: {reason}")
        return str(ckpt_path)
    folders = {path.parent for path in task_dir.glob("**/checkpoints/*.ckpt")}
    runs = sorted(folders, key=lambda folder: max(p.stat().st_mtime for p in folder.glob("*.ckpt")), reverse=True)
    if not runs:
        raise FileNotFoundError(f"ckpt_path=last: no checkpoints/*.ckpt under {task_dir}")
    newest, passed_over = newest_readable_checkpoint(runs[0])
    for path, reason in passed_over:
        log.warning("ckpt_path=last: skipping unreadable %s: %s", path, reason)
    if newest is None:
        raise FileNotFoundError(f"ckpt_path=last: no readable checkpoint in {runs[0]} (newest run of {task_dir})")
    log.info("resuming from %s", newest)
    return str(newest)


def wandb_id_for(ckpt_path: str) -> str | None:
    """The wandb run id recorded beside the checkpoint, so the resumed run continues the same wandb run."""
    id_file = Path(ckpt_path).parent / WANDB_ID_FILE
    return id_file.read_text().strip() if id_file.is_file() else None


@contextmanager
def one_line_errors(*also: type[BaseException]):
    """For the entry points (train.py, eval.py, refine.py): a user's mistake (bad data, missing weights, a config
    typo, a missing or rejected value, a missing file, and the script's own ``also`` kinds) ends the run with exit
    code 1 and the error's one line in the log, not a deep traceback."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    from gslrm.config import ConfigValueError
    from gslrm.data.format import DataFormatError
    from gslrm.lit.checkpoint_io import CheckpointSaveError
    from gslrm.weights import MissingWeightsError

    kinds = (
        ConfigValueError,
        DataFormatError,
        MissingWeightsError,
        InstantiationException,
        FileNotFoundError,
        FileExistsError,
        MissingMandatoryValue,
        CheckpointSaveError,
    )
    try:
        yield
    except kinds + also as error:
        log.error("%s", reason(error))
        raise SystemExit(1) from None


def reason(error: BaseException) -> str:
    """An error's one line for a person: its first line, or for a failed Hydra instantiation its cause's, with the
    config key (Hydra's own last line is the key alone: 'full_key: trainer' said nothing of a missing GPU)."""
    from hydra.errors import InstantiationException

    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    if not isinstance(error, InstantiationException):
        return _headline(lines)
    key = next((line for line in lines if line.startswith("full_key:")), None)
    said = [line for line in lines if not line.startswith("full_key:")] or lines
    cause = reason(error.__cause__) if error.__cause__ is not None else _headline(said)
    return f"{cause} ({key})" if key else cause


def _headline(lines: list[str]) -> str:
    """The first line, and the next where the first only announces it ("Error loading 'x.Y':")."""
    return f"{lines[0]} {lines[1]}" if len(lines) > 1 and lines[0].endswith(":") else lines[0]


# what a collective says when another rank vanished mid-step (its process or its whole node killed): gloo's TCP pair,
# NCCL's watchdog, and the store that ranks rendezvous through
LOST_PEER_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited or there was a network error",
    "NCCL communicator was aborted",
)


def lost_peer(error: BaseException) -> str | None:
    """The short cause when ``error`` is a collective that lost another rank, else None: gloo's message without its
    source path and advice (``Connection closed by peer [10.0.0.12]:48350``)."""
    text = str(error)
    for sign in LOST_PEER_SIGNS:
        if sign in text:
            cause = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])  # gloo's "[.../pair.cc:561] "
            return cause.split(". ", 1)[0]
    return None
