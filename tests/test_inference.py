"""The one way into a checkpoint (gslrm/inference.py): the checkpoint's input-view count wins, a data set that
cannot feed it is one line, and samples are found by name, path or index."""

from pathlib import Path

import pytest
import torch
from cli import data_overrides, run_script

from gslrm.inference import CheckpointMismatchError, find_sample, load_for_inference


def _five_input_checkpoint(path: Path, num_input_views: int = 5) -> Path:
    """A gslrm checkpoint of a tiny model trained (here: initialised) with 5 input views (or ``num_input_views``), as
    Lightning writes one."""
    from gslrm.lit.module import GSLRMModule
    from gslrm.lit.optim import OptimConfig
    from gslrm.losses.computer import LossConfig
    from gslrm.model.gslrm import ModelConfig

    module = GSLRMModule(
        model=ModelConfig(dim=64, depth=1, head_dim=32, patch_size=8),
        loss=LossConfig(perceptual={"weight": 0.0}),
        optim=OptimConfig(),
        num_input_views=num_input_views,
        val_lpips=False,
    )
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _compose(*overrides: str):
    from conftest import compose

    return compose("eval", *overrides)


def test_the_checkpoints_input_views_win_over_the_data_config(tmp_path, rodent_root, caplog):
    ckpt = _five_input_checkpoint(tmp_path / "five.ckpt")
    cfg = _compose(f"ckpt_path={ckpt}", *data_overrides(rodent_root), "data.num_input_views=4")
    with caplog.at_level("INFO", logger="gslrm.inference"):
        loaded = load_for_inference(cfg)
    assert loaded.num_input_views == 5 and loaded.data_config.num_input_views == 5
    assert "trained with 5 input views: the model gets 5 (data.num_input_views was 4)" in caplog.text
    assert loaded.render_config == loaded.render_config.__class__()  # the checkpoint's (default) render settings
    sample = loaded.dataset("val")[0]
    assert sample["image"].shape[0] == 6  # 5 inputs first, then the one novel view
    with torch.no_grad():  # the model takes exactly the 5 inputs it was built for
        from gslrm.predict import predict_gaussians

        batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
        gaussians = predict_gaussians(loaded.model, batch, loaded.num_input_views).gaussians
    height, width = sample["image"].shape[-2:]
    assert gaussians.means.shape[1] == 5 * height * width + 2  # one per input pixel of 5 views, 2 token Gaussians


def test_data_with_fewer_views_than_the_checkpoints_inputs_is_one_clear_line(tmp_path, rodent_root):
    ckpt = _five_input_checkpoint(tmp_path / "five.ckpt")
    cfg = _compose(f"ckpt_path={ckpt}", *data_overrides(rodent_root), "data.num_views=4")
    with pytest.raises(CheckpointMismatchError, match="trained with 5 input views, but the data has data.num_views=4"):
        load_for_inference(cfg)
    cfg = _compose(f"ckpt_path={ckpt}", *data_overrides(rodent_root), "data.input_views=[0,1,2,3]")
    with pytest.raises(CheckpointMismatchError, match=r"but data.input_views names 4: \[0, 1, 2, 3\]"):
        load_for_inference(cfg)


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_eval_py_says_the_mismatch_in_one_line(tmp_path, rodent_root):
    ckpt = _five_input_checkpoint(tmp_path / "five.ckpt")
    result = run_script("eval.py", tmp_path, rodent_root, f"ckpt_path={ckpt}", "data.num_views=4", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "trained with 5 input views, but the data has data.num_views=4" in output
    assert "Traceback" not in output


def test_find_sample_by_name_listed_path_or_index(rodent_root):
    from gslrm.data.dataset import DataConfig, ViewDataset

    dataset = ViewDataset(DataConfig(root=str(rodent_root), image_size=16), "train")
    second = dataset.samples[1]
    assert find_sample(dataset, second.name) == 1
    assert find_sample(dataset, str(second)) == 1
    assert find_sample(dataset, str(second.resolve().relative_to(Path(rodent_root).resolve()))) == 1
    assert find_sample(dataset, 2) == 2 and find_sample(dataset, "0") == 0
    with pytest.raises(ValueError, match=r"sample: 'nope' is not in split 'train' \(3 samples: ") as error:
        find_sample(dataset, "nope")
    assert "\n" not in str(error.value)
