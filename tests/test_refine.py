"""Per-scene refinement: the stacks, the parameterization, refine.py end to end, and what the depth term buys."""

import json

import pytest
import torch
from cli import TRAINED_IMAGE_SIZE, run_script

from gslrm.model.gaussians import Gaussians
from gslrm.refine import GaussianParameters, LearningRates, RefineConfig, ViewpointStack, refine_sample


def test_viewpoint_stack_visits_every_view_once_per_round():
    stack = ViewpointStack([0, 1, 2, 4], seed=3)
    rounds = [sorted(stack.pop() for _ in range(4)) for _ in range(3)]
    assert rounds == [[0, 1, 2, 4]] * 3


def test_gaussian_parameters_reproduce_the_prediction():
    n = 7
    gaussians = Gaussians(
        means=torch.randn(1, n, 3),
        features=torch.randn(1, n, 1, 3),
        scales=torch.rand(1, n, 3) * 0.1 + 0.01,
        quats=torch.nn.functional.normalize(torch.randn(1, n, 4), dim=-1),
        opacities=torch.rand(1, n) * 0.9 + 0.05,
    )
    parameters = GaussianParameters(gaussians)
    back = parameters.gaussians()
    for name in ("means", "features", "scales", "quats", "opacities"):
        assert torch.allclose(getattr(back, name), getattr(gaussians, name), atol=1e-5), name
    optimizer = parameters.optimizer(LearningRates(), extent=3.0)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == pytest.approx(
        {"means": 4.8e-4, "features": 2.5e-3, "opacities": 0.05, "scales": 5e-3, "quats": 1e-3}
    )


def _sample_and_model(trained_run, rodent_root):
    from gslrm.data.datamodule import collate_views
    from gslrm.data.dataset import DataConfig, ViewDataset
    from gslrm.inference import load_model

    config = DataConfig(
        root=str(rodent_root), image_size=TRAINED_IMAGE_SIZE, normalization={"up": [0, 0, 1]}, load_depth=True
    )
    sample = collate_views([ViewDataset(config, "val")[0]])
    model, render_config, _ = load_model(str(trained_run / "checkpoints" / "last.ckpt"), None)
    return sample, model, render_config


def _confidence_loss(depth_weight):
    from gslrm.losses.computer import LossConfig

    return LossConfig(
        l2={"weight": 0.0},
        perceptual={"weight": 0.0},
        image={"weight": 1.0},
        depth={"weight": depth_weight, "estimator": "ground_truth"},
        confidence={"source": "runtime", "method": "simple"},
    )


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_holdout_views_must_be_novel_views_of_the_sample(trained_run, rodent_root, tmp_path):
    sample, model, render_config = _sample_and_model(trained_run, rodent_root)
    for holdout in ([2], [], [6]):  # an input, none, outside the sample
        with pytest.raises(ValueError, match="refine.holdout_views"):
            refine_sample(
                model, sample, 4, _confidence_loss(0.0), RefineConfig(str(tmp_path), 1, holdout), render_config
            )


@pytest.mark.slow
def test_refinement_improves_held_out_psnr_and_the_depth_term_lowers_depth_error(trained_run, rodent_root, tmp_path):
    sample, model, render_config = _sample_and_model(trained_run, rodent_root)
    reports = {}
    for weight in (0.0, 0.05):  # the depth term's weight
        config = RefineConfig(str(tmp_path / str(weight)), iterations=100, turntable_views=4, video_format="gif")
        reports[weight] = refine_sample(model, sample, 4, _confidence_loss(weight), config, render_config)
    for report in reports.values():  # both runs improve the held-out view over the feed-forward prediction
        assert report["heldout_after"]["psnr"] > report["heldout_before"]["psnr"] + 0.5
    # the depth term supervises the fitted views: their depth error against ground truth is lower with it
    without, with_depth = (reports[w]["fit_after"] for w in (0.0, 0.05))
    assert with_depth["depth_abs_rel"] < without["depth_abs_rel"], (with_depth, without)
    assert with_depth["depth_abs_rel_aligned"] < without["depth_abs_rel_aligned"], (with_depth, without)


@pytest.mark.slow
def test_refine_py_writes_its_report(trained_run, rodent_root, tmp_path):
    run_script(
        "refine.py",
        tmp_path,
        rodent_root,
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        "sample=0",
        f"data.image_size={TRAINED_IMAGE_SIZE}",
        "refine.iterations=40",
        "refine.turntable_views=4",
        "refine.video_format=gif",
    )
    out = next((tmp_path / "logs" / "refine" / "runs").glob("*"))
    report = json.loads((out / "refine_metrics.json").read_text())
    assert report["holdout_views"] == [5] and report["fit_views"] == [0, 1, 2, 3, 4] and report["iterations"] == 40
    assert {"psnr", "ssim", "mask_iou", "depth_abs_rel"} <= set(report["heldout_after"])
    assert report["fit_after"]["psnr"] > report["fit_before"]["psnr"]
    for name in (
        "gaussians_predicted.ply",
        "gaussians_refined.ply",
        "heldout_predicted.png",
        "heldout_refined.png",
        "turntable_refined.gif",
        "turntable_refined_preview.png",
    ):
        assert (out / name).is_file(), name


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_refine_py_unknown_sample_is_one_line(trained_run, rodent_root, tmp_path):
    result = run_script(
        "refine.py",
        tmp_path,
        rodent_root,
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        "sample=no_such_mouse",
        f"data.image_size={TRAINED_IMAGE_SIZE}",
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "sample: 'no_such_mouse' is not in split 'val'" in output
    assert "Traceback" not in output
