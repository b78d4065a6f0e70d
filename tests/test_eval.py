"""Training pictures in the offline wandb run, PNG fallbacks without wandb, and eval.py's files and numbers."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from cli import TRAINED_IMAGE_SIZE as IMAGE_SIZE
from cli import run_script
from conftest import composition_error
from wandb_records import read_run

from gslrm.data.datamodule import collate_views
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.evaluate import EvalConfig, Evaluator
from gslrm.inference import load_model
from gslrm.losses.metrics import thin_parts
from gslrm.model.gslrm import GSLRM, ModelConfig
from gslrm.render import RenderConfig, render

MIN_OPACITY = 0.11  # about the untrained opacity sigmoid(-2) = 0.119: some Gaussians are kept, some not
IMAGE_KEYS = [
    "images/train/supervision_0",
    "images/train/input_0",
    "images/train/turntable_0",
    "images/val/gt_vs_pred_0",
]
SCALAR_KEYS = [
    "metrics/iter",
    "metrics/lr",
    "metrics/grad_norm",
    "train/loss",
    "train/l2_loss",
    "train/psnr",
    "train/mask_iou",
    "val/psnr",
    "val/ssim",
    "val/mask_iou",
]


@pytest.fixture(scope="module")
def trained(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, rodent_root, trained):
    """eval.py on that checkpoint, with an empty torch hub cache (so LPIPS weights are missing, as offline)."""
    tmp_path = tmp_path_factory.mktemp("evaluated")
    run_script(
        "eval.py",
        tmp_path,
        rodent_root,
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        f"data.image_size={IMAGE_SIZE}",
        "eval.turntable_views=6",
        "eval.video_format=gif",
        "eval.save_ply=true",
        f"eval.min_opacity={MIN_OPACITY}",
        "eval.background=black",
        env={"TORCH_HOME": str(tmp_path / "empty_torch_home")},
    )
    return next((tmp_path / "logs" / "eval" / "runs").glob("*"))


@pytest.mark.slow
def test_offline_wandb_run_has_every_section_and_image(trained):
    run_file = next(trained.glob("wandb/offline-run-*/run-*.wandb"))
    run = read_run(run_file)
    logged = {key for row in run["history"] for key in row}
    assert set(SCALAR_KEYS) <= logged, sorted(set(SCALAR_KEYS) - logged)
    for key in IMAGE_KEYS:
        entries = [row[key] for row in run["history"] if key in row]
        assert entries and entries[0]["_type"] == "images/separated" and entries[0]["count"] == 1, key
        media = run_file.parent / "files" / entries[0]["filenames"][0]
        assert media.is_file() and media.stat().st_size > 100, media
    for section in ("images", "metrics", "train", "val"):  # one wandb UI section each, on the global step
        assert run["metrics"].get(f"{section}/*") == "trainer/global_step"
    steps = [row["trainer/global_step"] for row in run["history"] if "images/val/gt_vs_pred_0" in row]
    assert steps == sorted(steps) and len(steps) >= 2  # before training, then at every val_every


@pytest.mark.slow
def test_eval_writes_metrics_csv_and_pictures(evaluated):
    summary = json.loads((evaluated / "metrics.json").read_text())
    assert summary["num_samples"] == 1 and summary["split"] == "val"
    for key in ("psnr", "ssim", "mask_iou", "psnr_novel", "ssim_novel", "mask_iou_novel"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), key
    assert summary["lpips"] is None and "vgg16-397923af.pth" in summary["lpips_missing"]  # reported, not fatal
    rows = list(csv.DictReader((evaluated / "per_sample.csv").open()))
    assert len(rows) == 1 and float(rows[0]["psnr"]) == pytest.approx(summary["psnr"], abs=1e-6)
    sample = evaluated / "samples" / rows[0]["sample"]
    for name in ("gt_vs_pred.png", "input.png", "turntable.gif", "turntable_preview.png", "gaussians.ply"):
        assert (sample / name).is_file(), name
    import imageio.v3 as iio

    # panels and turntables at eval.render_size (256) whatever the training size (16 here)
    assert iio.imread(sample / "turntable.gif").shape == (6, 256, 256, 3)
    assert iio.imread(sample / "input.png").shape == (256, 4 * 256, 3)
    assert iio.imread(sample / "gt_vs_pred.png").shape[1] > 6 * 256
    assert (iio.imread(sample / "input.png")[:4, :4] == 0).all()  # eval.background=black: the truth moved onto black
    export = summary["export"]["samples"][rows[0]["sample"]]
    assert (
        summary["export"]["min_opacity"] == MIN_OPACITY
        and export["kept"] <= export["gaussians"] == 4 * IMAGE_SIZE**2 + 2
    )
    from gslrm.model.gaussians import load_ply

    saved = load_ply(sample / "gaussians.ply")
    assert saved.means.shape[1] == export["ply"] <= export["kept"] and (saved.opacities > MIN_OPACITY - 1e-6).all()


@pytest.mark.slow
def test_eval_psnr_matches_an_independent_computation(evaluated, trained, rodent_root):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model = GSLRM(ModelConfig(**checkpoint["hyper_parameters"]["model"])).eval()
    model.load_state_dict({k[6:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")})
    dataset = ViewDataset(
        DataConfig(
            root=str(rodent_root),
            image_size=IMAGE_SIZE,
            recenter=True,
            normalization={"up": [0, 0, 1]},
            load_orbit=True,
        ),
        "val",
    )
    sample = collate_views([dataset[0]])
    with torch.no_grad():
        gaussians = model(
            sample["image"][:, :4], sample["c2w"][:, :4], sample["fxfycxcy"][:, :4]
        ).gaussians  # RGBA: the hull
        rendered = render(gaussians, sample["c2w"], sample["fxfycxcy"], IMAGE_SIZE, IMAGE_SIZE)
        orbit = render(gaussians, sample["orbit_c2w"], sample["orbit_fxfycxcy"], IMAGE_SIZE, IMAGE_SIZE)
        rgb, rendered_alpha = rendered.rgb[0].numpy(), rendered.alpha[0].numpy()
    row = next(csv.DictReader((evaluated / "per_sample.csv").open()))
    export = json.loads((evaluated / "metrics.json").read_text())["export"]["samples"][row["sample"]]
    assert export["kept"] == int((gaussians.opacities[0] > MIN_OPACITY).sum())  # eval.min_opacity's count
    # the held-out orbit: 16 views, scored as the rig's views are
    orbit_target, orbit_alpha = sample["orbit_image"][0, :, :3].numpy(), sample["orbit_image"][0, :, 3:4].numpy()
    assert orbit_target.shape[0] == 16
    orbit_mse = ((np.clip(orbit.rgb[0].numpy(), 0, 1) - orbit_target) ** 2).reshape(16, -1).mean(axis=1)
    assert float(row["psnr_orbit"]) == pytest.approx((-10 * np.log10(orbit_mse)).mean(), abs=1e-4)
    orbit_hit, orbit_truth = orbit.alpha[0].numpy() > 0.5, orbit_alpha > 0.5
    expected_iou = (orbit_hit & orbit_truth).sum() / max((orbit_hit | orbit_truth).sum(), 1)
    assert float(row["opacity_iou_orbit"]) == pytest.approx(expected_iou, abs=1e-6)
    assert float(row["opacity_iou_white_orbit"]) == 0.0
    orbit_thin = thin_parts(torch.from_numpy(orbit_alpha)).numpy()  # a known-answer test of its own: test_losses
    expected_thin = (orbit_hit & orbit_thin).sum() / orbit_thin.sum() if orbit_thin.any() else math.nan
    assert float(row["thin_recall_orbit"]) == pytest.approx(expected_thin, abs=1e-6, nan_ok=True)
    target = sample["image"][0, :, :3].numpy()
    # on black: the render minus the white the rendered alpha let through, the truth minus the white its alpha did
    black = np.clip(np.clip(rgb, 0, 1) - (1 - rendered_alpha), 0, 1)
    truth_black = np.clip(target - (1 - sample["image"][0, :, 3:4].numpy()), 0, 1)
    black_mse = ((black - truth_black) ** 2).reshape(len(target), -1).mean(axis=1)
    assert float(row["psnr_black_novel"]) == pytest.approx((-10 * np.log10(black_mse[4:])).mean(), abs=1e-4)

    def psnr(prediction, mask=None):
        squared = (np.clip(prediction, 0, 1) - target) ** 2
        if mask is None:
            mse = squared.reshape(len(target), -1).mean(axis=1)
        else:
            mse = (squared * mask).reshape(len(target), -1).sum(axis=1) / (
                3 * mask.reshape(len(target), -1).sum(axis=1)
            )
        return -10 * np.log10(mse)

    foreground = (sample["image"][0, :, 3:4].numpy() > 0.5).astype(np.float64)
    white = np.ones_like(target)
    for key, values in {
        "psnr": psnr(rgb),
        "psnr_white": psnr(white),
        "psnr_masked": psnr(rgb, foreground),
        "psnr_masked_white": psnr(white, foreground),
    }.items():
        assert float(row[key]) == pytest.approx(values.mean(), abs=1e-4), key
        assert float(row[f"{key}_novel"]) == pytest.approx(values[4:].mean(), abs=1e-4), key
        assert float(row[f"{key}_input"]) == pytest.approx(values[:4].mean(), abs=1e-4), key
    predicted, truth = rendered_alpha > 0.5, foreground > 0.5
    for suffix, views in (("", slice(None)), ("_novel", slice(4, None)), ("_input", slice(0, 4))):
        union = (predicted[views] | truth[views]).sum()
        expected = (predicted[views] & truth[views]).sum() / max(union, 1)
        assert float(row[f"opacity_iou{suffix}"]) == pytest.approx(expected, abs=1e-6), suffix


@pytest.mark.slow
def test_eval_agrees_with_the_last_validation(trained, evaluated):
    run = read_run(next(trained.glob("wandb/offline-run-*/run-*.wandb")))
    last_val = [row["val/psnr"] for row in run["history"] if "val/psnr" in row][-1]
    assert json.loads((evaluated / "metrics.json").read_text())["psnr"] == pytest.approx(last_val, abs=1e-3)


@pytest.mark.slow
def test_without_wandb_images_go_to_png(tmp_path, rodent_root):
    """fast_dev_run swaps the wandb logger for a dummy one; the pictures must still land, as PNGs."""
    run_script(
        "train.py",
        tmp_path,
        rodent_root,
        "debug=fdr",
        "loss=l2",
        f"data.image_size={IMAGE_SIZE}",
        "callbacks.visuals.turntable_views=4",
    )
    run_dir = next((tmp_path / "logs" / "train" / "runs").glob("*"))
    for key in IMAGE_KEYS:
        assert list((run_dir / key).glob("step_*.png")), key


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_eval_without_a_checkpoint_is_one_line(tmp_path):
    result = run_script("eval.py", tmp_path, None, "ckpt_path=/nonexistent/last.ckpt", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "ckpt_path: /nonexistent/last.ckpt: file not found" in output
    assert "Traceback" not in output


TINY = {"dim": 64, "depth": 1, "head_dim": 32, "patch_size": 8}


def test_load_model_from_a_facelift_style_checkpoint(tmp_path):
    source = GSLRM(ModelConfig(**TINY))
    torch.save({"model": source.state_dict()}, tmp_path / "facelift.pt")
    with pytest.raises(ValueError, match="not a gslrm checkpoint; for FaceLift weights pass model="):
        load_model(str(tmp_path / "facelift.pt"), None)
    model, render_config, num_input_views = load_model(str(tmp_path / "facelift.pt"), ModelConfig(**TINY))
    assert render_config is None and num_input_views is None and not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_sample_metrics_known_answers():
    evaluator = Evaluator(GSLRM(ModelConfig(**TINY)), EvalConfig(lpips="random"), 2, RenderConfig())
    image = torch.ones(3, 4, 32, 32)  # LPIPS's VGG16 needs >= 16 px, SSIM's window 11 px
    image[:, :3, 8:24, 8:24] = 0.25  # a grey square on white, alpha 1 inside
    image[:, 3] = 0
    image[:, 3, 8:24, 8:24] = 1
    alpha = image[:, 3:4]
    pred = image[:, :3].clone()
    pred[0] += 0.1 * (image[0, :3] < 1)  # view 0: the square off by 0.1 -> mse 0.01 * 256/1024
    white = torch.ones(3)
    metrics = evaluator.sample_metrics(pred.clamp(0, 1), alpha, image, white, "")
    assert metrics["psnr"] == math.inf or metrics["psnr"] > 100  # two exact views
    first = evaluator.sample_metrics(pred[:1].clamp(0, 1), alpha[:1], image[:1], white, "")
    assert first["psnr"] == pytest.approx(-10 * np.log10(0.01 * 256 / 1024), abs=1e-3)  # 26.02 dB
    assert first["psnr_black"] == pytest.approx(first["psnr"], abs=1e-3)  # same error, on black
    assert metrics["mask_iou"] == pytest.approx(1.0) and metrics["opacity_iou"] == pytest.approx(1.0)
    assert metrics["opacity_iou_white"] == 0.0
    assert metrics["lpips"] >= 0 and math.isfinite(metrics["lpips"])
    # white fog: the same RGB on white, but the whole image opaque -> invisible on white, error on black:
    # 768 background pixels of 1024 are white instead of black: mse 0.75 -> 1.249 dB
    fog = evaluator.sample_metrics(image[:1, :3], torch.ones_like(alpha[:1]), image[:1], white, "")
    assert fog["psnr"] > 100 and fog["psnr_black"] == pytest.approx(-10 * np.log10(0.75), abs=1e-3)
    assert fog["opacity_iou"] == pytest.approx(256 / 1024)
    same = evaluator.sample_metrics(image[:, :3], alpha, image, white, "_novel")
    assert same["lpips_novel"] == pytest.approx(0.0, abs=1e-6) and same["ssim_novel"] == pytest.approx(1.0)
    empty = evaluator.sample_metrics(pred[:0], alpha[:0], image[:0], white, "_novel")
    assert all(math.isnan(value) for value in empty.values())


def test_eval_config_rejects_bad_export_options():
    message = composition_error("eval", "ckpt_path=x", "eval.background=pink")
    assert "eval.background=pink" in message and "Invalid value 'pink', expected one of [white, black, grey]" in message
    message = composition_error("eval", "ckpt_path=x", "eval.orbit=sometimes")
    assert "eval.orbit=sometimes" in message and "Value 'sometimes' is not a valid bool" in message
    with pytest.raises(ValueError, match=r"eval.min_opacity: expected a value in \[0, 1\)"):
        EvalConfig(min_opacity=1.5)


@pytest.mark.slow
def test_eval_on_two_cpu_processes_matches_one(tmp_path, rodent_root, trained):
    """DDP eval: rows gathered from both ranks, the sampler's padding duplicate dropped, same numbers as 1 process."""
    common = [
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        f"data.image_size={IMAGE_SIZE}",
        "split=train",
        "eval.num_visuals=0",
        "eval.lpips=off",
        "trainer.accelerator=cpu",
    ]
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        out.mkdir()
        extra = ["trainer.devices=2", "trainer.strategy=ddp"] if devices == 2 else []
        run_script("eval.py", out, rodent_root, *common, *extra)
        results[devices] = json.loads(next((out / "logs" / "eval" / "runs").glob("*/metrics.json")).read_text())
    assert results[1]["num_samples"] == results[2]["num_samples"] == 3  # 3 samples over 2 ranks: one padded
    for key in ("psnr", "ssim", "mask_iou", "psnr_novel"):
        assert results[2][key] == pytest.approx(results[1][key], abs=1e-5), key


def test_resize_views_known_answer():
    """Smaller: each pixel the mean of the 2x2 block it covers; the intrinsics halve (pixel centres at +0.5)."""
    from gslrm.data.resolution import resize_views

    image = torch.arange(16.0).reshape(1, 1, 1, 4, 4).expand(2, 3, 3, 4, 4)
    fxfycxcy = torch.tensor([10.0, 12.0, 2.0, 2.0]).expand(2, 3, 4)
    small, k = resize_views(image, fxfycxcy, 2)
    assert small.shape == (2, 3, 3, 2, 2)
    assert torch.equal(small[0, 0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert torch.equal(k[0, 0], torch.tensor([5.0, 6.0, 1.0, 1.0]))


def test_eval_input_size_feeds_the_model_resized_inputs_and_scores_at_the_data_size():
    """eval.input_size: the model sees the inputs at its training size, the targets are rendered at the data's."""
    from gslrm.cameras import turntable_cameras
    from gslrm.data.resolution import resize_views
    from gslrm.predict import predict_and_render

    model = GSLRM(ModelConfig(dim=32, depth=1, head_dim=16)).eval()
    c2w, k = turntable_cameras(6, 32, elevation_deg=20.0)
    batch = {"image": torch.rand(1, 6, 4, 32, 32), "c2w": c2w[None], "fxfycxcy": k[None], "bg_color": torch.ones(1, 3)}
    with torch.no_grad():
        output, rendered = predict_and_render(model, batch, 4, RenderConfig(), input_size=16)
        small, small_k = resize_views(batch["image"][:, :4, :3], k[None, :4], 16)
        expected = model(small, c2w[None, :4], small_k).gaussians
    assert 4 * 16 * 16 <= output.gaussians.means.shape[1] < 4 * 32 * 32  # per input pixel at 16 px (+ token ones)
    assert torch.equal(output.gaussians.means, expected.means)
    assert rendered.rgb.shape == (1, 6, 3, 32, 32)
    with pytest.raises(ValueError, match="eval.input_size"):
        EvalConfig(input_size=4)
