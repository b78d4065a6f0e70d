"""The one way into a checkpoint for every entry point that runs a trained model (eval.py, refine.py, the viewer, and
any new one): the model with its own model and render config, the input-view count it was trained with, the data
config it is run on, and the lookup of a sample by name.

A gslrm checkpoint carries its model config, render config and ``num_input_views``; they win over the entry point's
config, because a model scored with another input count than it learnt with is silently a different experiment.
When the data cannot give that many inputs the run stops with one line. A FaceLift checkpoint carries none of them:
``model=base`` and the data config say what it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig

from gslrm.config import build, coerce
from gslrm.data.datamodule import ViewDataModule
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.model.gslrm import GSLRM, ModelConfig, load_facelift_checkpoint, read_checkpoint
from gslrm.render import RenderConfig
from gslrm.runs import resolve_checkpoint

log = logging.getLogger(__name__)

__all__ = [
    "Inference",
    "load_for_inference",
    "load_model",
    "load_with_dataset",
    "find_sample",
    "CheckpointMismatchError",
]


class CheckpointMismatchError(ValueError):
    """The checkpoint and the config disagree in a way no default can settle (one line naming both)."""


@dataclass
class Inference:
    """A checkpoint ready to run: ``model`` (eval mode, CPU) and everything needed to feed it."""

    checkpoint: str
    model: GSLRM
    render_config: RenderConfig
    num_input_views: int  # the checkpoint's (FaceLift's: the data config's)
    data_config: DataConfig  # data.num_input_views set to num_input_views

    def datamodule(self, test_split: str = "test") -> ViewDataModule:
        """The data module, its data generated first where the config says so (the rodent default)."""
        datamodule = ViewDataModule(self.data_config, test_split=test_split)
        datamodule.prepare_data()
        return datamodule

    def dataset(self, split: str) -> ViewDataset:
        dataset = self.datamodule().dataset(split)
        if len(dataset) == 0:
            raise FileNotFoundError(f"split={split}: no samples in {self.data_config.root}")
        return dataset


def load_model(ckpt_path: str, model_config: ModelConfig | None) -> tuple[GSLRM, RenderConfig | None, int | None]:
    """The model of ``ckpt_path`` (read once, ``weights_only=True``), with the render config and input-view count a
    gslrm checkpoint stores (None for a FaceLift checkpoint, which needs ``model_config``)."""
    checkpoint = read_checkpoint(ckpt_path, "ckpt_path")
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    render_config, num_input_views = None, None
    if hyper is not None:
        model_config = coerce(ModelConfig, {**hyper["model"], "init_from": None})
        render_config = coerce(RenderConfig, hyper["render"])
        num_input_views = hyper.get("num_input_views")
    elif model_config is None:
        raise ValueError(f"ckpt_path: {ckpt_path}: not a gslrm checkpoint; for FaceLift weights pass model=base")
    model = GSLRM(model_config)
    load_facelift_checkpoint(model, ckpt_path, checkpoint=checkpoint, config_key="ckpt_path")
    return model.eval(), render_config, num_input_views


def load_for_inference(cfg: DictConfig) -> Inference:
    """``cfg.ckpt_path`` (a file or ``last``: the newest run of ``cfg.train_task``) loaded with ``cfg.data``,
    ``cfg.render`` (FaceLift checkpoints) and ``cfg.model`` (FaceLift checkpoints only)."""
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.train_task)
    model_config = build(cfg.model) if cfg.get("model") else None
    model, render_config, trained_inputs = load_model(ckpt_path, model_config)
    if render_config is None:
        render_config = build(cfg.render) if cfg.get("render") else RenderConfig()
    data_config = build(cfg.data)
    return Inference(
        checkpoint=ckpt_path,
        model=model,
        render_config=render_config,
        num_input_views=trained_inputs or data_config.num_input_views,
        data_config=with_input_views(data_config, trained_inputs, ckpt_path),
    )


def load_with_dataset(
    ckpt_path: str, data_overrides: list[str], split: str = "val"
) -> tuple[GSLRM, RenderConfig, ViewDataset]:
    """A gslrm checkpoint and the default run's data (``conf/config.yaml`` with ``data_overrides``) feeding it the
    input views it was trained with: what the checkpoint diagnostics (``gslrm.bench.ceiling``, ``.edges``) read."""
    from gslrm.schemas import compose

    model, render_config, trained_inputs = load_model(ckpt_path, None)
    data_config = with_input_views(build(compose("config", data_overrides).data), trained_inputs, ckpt_path)
    return model, render_config or RenderConfig(), ViewDataset(data_config, split)


def with_input_views(data_config: DataConfig, trained_inputs: int | None, ckpt_path: str) -> DataConfig:
    """``data_config`` feeding the checkpoint's ``trained_inputs`` input views (unchanged when it stores none)."""
    if trained_inputs is None or trained_inputs == data_config.num_input_views:
        return data_config
    if trained_inputs > data_config.num_views:
        raise CheckpointMismatchError(
            f"ckpt_path: {ckpt_path} was trained with {trained_inputs} input views, but the data has "
            f"data.num_views={data_config.num_views} views per sample"
        )
    if data_config.input_views is not None and len(data_config.input_views) != trained_inputs:
        raise CheckpointMismatchError(
            f"ckpt_path: {ckpt_path} was trained with {trained_inputs} input views, but data.input_views names "
            f"{len(data_config.input_views)}: {list(data_config.input_views)}"
        )
    log.info(
        "%s was trained with %d input views: the model gets %d (data.num_input_views was %d)",
        ckpt_path,
        trained_inputs,
        trained_inputs,
        data_config.num_input_views,
    )
    return replace(data_config, num_input_views=trained_inputs)


def find_sample(dataset: ViewDataset, name: str | int) -> int:
    """Index in ``dataset`` of the sample ``name``: its directory name, its path as listed in the split file (or
    relative to data.root), or its index in the split. One line naming the split when it is not there."""
    name = str(name)
    root = Path(dataset.config.root or ".").resolve()
    for index, path in enumerate(dataset.samples):
        resolved = path.resolve()
        relative = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else None
        if name in (relative, path.name, str(path)):
            return index
    if name.isdigit() and int(name) < len(dataset):
        return int(name)
    listed = ", ".join(p.name for p in dataset.samples[:5])
    raise ValueError(f"sample: {name!r} is not in split '{dataset.split}' ({len(dataset)} samples: {listed}, ...)")
