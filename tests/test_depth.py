"""Seed 000's confidence/depth pipeline: known answers for every formula, the schedule, caching, maps, MiDaS loading."""

import json
import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim

from gslrm.depth.confidence import ConfidenceCache, augmentations, gradient_confidence, variance_confidence
from gslrm.depth.estimators import MidasConfig, MidasEstimator, disparity_from_depth, load_midas
from gslrm.depth.pseudo import PseudoStack, orbit_cameras
from gslrm.losses.depth import pearson, pearson_depth_loss
from gslrm.losses.image import broadcast_confidence, image_loss, l1_confidence, ssim_confidence, weighted_mean
from gslrm.losses.pseudo_depth import pseudo_depth_loss, pseudo_ramp
from gslrm.weights import MissingWeightsError

LOSS = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
CONF = torch.tensor([[0.9, 0.8, 0.7], [0.6, 0.5, 0.4], [0.3, 0.2, 0.1]])


# -- confidence-weighted losses ----------------------------------------------------------------------------------
def test_weighted_mean_known_answer_for_every_confidence_shape():
    # sum(l * c) = 0.09 + 0.16 + 0.21 + 0.24 + 0.25 + 0.24 + 0.21 + 0.16 + 0.09 = 1.65; sum(c) = 4.5
    expected = 1.65 / 4.5  # 0.366667
    loss = LOSS.expand(2, 3, 3, 3)  # [B, C, H, W]
    for confidence in (CONF, CONF.expand(2, 3, 3), CONF.expand(2, 1, 3, 3)):
        assert float(weighted_mean(loss, confidence)) == pytest.approx(expected, abs=1e-6)
    assert float(weighted_mean(loss, None)) == pytest.approx(0.5)
    assert float(weighted_mean(loss, torch.full((3, 3), 0.3))) == pytest.approx(0.5, abs=1e-6)  # constant c: the mean
    with pytest.raises(ValueError, match="confidence"):
        weighted_mean(loss, torch.ones(1, 1, 1, 3, 3))


def test_confidence_is_resized_bilinearly_to_the_loss():
    coarse = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    c = broadcast_confidence(coarse, torch.zeros(1, 3, 4, 4))
    assert c.shape == (1, 3, 4, 4)
    assert c[0, 0, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])  # align_corners=False bilinear


def test_l1_and_ssim_with_confidence():
    render, target = torch.zeros(1, 3, 3, 3), LOSS.expand(1, 3, 3, 3)
    assert float(l1_confidence(render, target, CONF)) == pytest.approx(1.65 / 4.5, abs=1e-6)
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    plain = float(reference_ssim(x, y, data_range=1.0))
    assert float(ssim_confidence(x, y)) == pytest.approx(plain, abs=1e-5)
    assert float(ssim_confidence(x, y, torch.ones(24, 24))) == pytest.approx(plain, abs=1e-5)
    # confidence only on the left half: the SSIM of the left half's window centres
    left = torch.zeros(24, 24)
    left[:, :12] = 1
    from gslrm.losses.ssim import ssim_map

    expected = float(ssim_map(x, y)[..., :, :7].mean())  # 'valid' map columns 0..13 are centres 5..18; < 12 -> 0..6
    assert float(ssim_confidence(x, y, left)) == pytest.approx(expected, abs=1e-5)


def test_image_loss_is_the_weighted_sum():
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    l1 = float((x - y).abs().mean())
    similarity = float(reference_ssim(x, y, data_range=1.0))
    assert float(image_loss(x, y, None, 0.2)) == pytest.approx(0.8 * l1 + 0.2 * (1 - similarity), abs=1e-5)
    assert float(image_loss(x, y, None, 0.0)) == pytest.approx(l1, abs=1e-6)
    assert float(image_loss(x, x, torch.rand(16, 16), 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(image_loss(x, y, None, 0.0, norm="l2")) == pytest.approx(float(((x - y) ** 2).mean()), abs=1e-6)


# -- Pearson depth terms -----------------------------------------------------------------------------------------
def test_pearson_matches_numpy_with_and_without_a_mask():
    x, y = torch.randn(3, 40, dtype=torch.float64), torch.randn(3, 40, dtype=torch.float64)
    for i in range(3):
        assert float(pearson(x, y)[i]) == pytest.approx(np.corrcoef(x[i], y[i])[0, 1], abs=1e-10)
    keep = torch.rand(3, 40) > 0.4
    masked = pearson(x, y, keep.double())
    for i in range(3):
        assert float(masked[i]) == pytest.approx(np.corrcoef(x[i][keep[i]], y[i][keep[i]])[0, 1], abs=1e-10)


def test_pearson_depth_loss_against_the_direct_formula():
    prior = torch.rand(2, 1, 6, 7, dtype=torch.float64) + 0.1
    rendered = torch.rand(2, 1, 6, 7, dtype=torch.float64) + 1.0
    expected = []
    for view in range(2):
        d, dm = rendered[view].flatten().numpy(), prior[view].flatten().numpy()
        direct = 1 - np.corrcoef(-dm, d)[0, 1]
        shifted = 1 - np.corrcoef(1 / (dm + 200), d)[0, 1]
        expected.append(min(direct, shifted))
    assert float(pearson_depth_loss(rendered, prior)) == pytest.approx(np.mean(expected), abs=1e-9)
    assert float(pearson_depth_loss(3.0 - 2.0 * prior, prior)) == pytest.approx(0.0, abs=1e-9)  # affine in -d_m
    mask = torch.zeros_like(prior)
    mask[..., :3, :] = 1
    d, dm = rendered[0, 0, :3].flatten().numpy(), prior[0, 0, :3].flatten().numpy()
    one = min(1 - np.corrcoef(-dm, d)[0, 1], 1 - np.corrcoef(1 / (dm + 200), d)[0, 1])
    assert float(pearson_depth_loss(rendered[:1], prior[:1], mask[:1])) == pytest.approx(one, abs=1e-9)


def test_pseudo_depth_loss_and_its_schedule():
    estimated = torch.rand(2, 1, 5, 5)
    assert float(pseudo_depth_loss(-3 * estimated + 1, estimated)) == pytest.approx(0.0, abs=1e-5)
    assert float(pseudo_depth_loss(estimated, estimated)) == pytest.approx(2.0, abs=1e-5)
    # active when step % interval == 0 and start < step < end; scale min((step - start) / 500, 1)
    assert pseudo_ramp(10, start=10, end=2000, interval=2) == 0.0
    assert pseudo_ramp(12, start=10, end=2000, interval=2) == pytest.approx(0.004)
    assert pseudo_ramp(13, start=10, end=2000, interval=2) == 0.0
    assert pseudo_ramp(260, start=10, end=2000, interval=2) == pytest.approx(0.5)
    assert pseudo_ramp(1500, start=10, end=2000, interval=2) == 1.0
    assert pseudo_ramp(2000, start=10, end=2000, interval=2) == 0.0


# -- confidence maps ---------------------------------------------------------------------------------------------
def test_augmentations_and_variance_confidence_known_answer():
    image = torch.zeros(1, 3, 4, 6)
    image[:, 0] = torch.linspace(0, 1, 6)  # red ramp, left to right
    estimate = lambda x: x[:, :1] * torch.linspace(1, 2, x.shape[-1])  # noqa: E731 - not flip-equivariant
    views = augmentations(image, 4, noise_std=0.0)
    assert len(views) == 4 and torch.equal(views[1][0], image.flip(-1))
    assert torch.allclose(views[2][0], (0.299 * image[:, :1]).expand_as(image))
    red, ramp = image[0, 0], torch.linspace(1, 2, 6)
    by_hand = torch.stack([red * ramp, (red.flip(-1) * ramp).flip(-1), 0.299 * red * ramp, red * ramp])
    variance = by_hand.var(dim=0, unbiased=False)
    expected = 1 - (variance - variance.min()) / (variance.max() - variance.min())
    confidence = variance_confidence(image, estimate, 4, noise_std=0.0)
    assert confidence.shape == (1, 4, 6) and torch.allclose(confidence[0], expected, atol=1e-6)
    assert torch.allclose(
        variance_confidence(torch.full((1, 3, 4, 4), 0.5), lambda x: x[:, :1], 3), torch.ones(1, 4, 4)
    )
    with pytest.raises(ValueError, match="num_augmentations"):
        augmentations(image, 5)


def test_gradient_confidence_and_uncertainty_conversion():
    ramp = torch.linspace(0, 1, 8).expand(1, 1, 8, 8)
    assert torch.allclose(gradient_confidence(ramp), torch.ones(1, 8, 8))  # constant slope: nothing stands out
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    confidence = gradient_confidence(step)[0]
    assert confidence[:, 3:5].max() == 0.0 and confidence[:, :2].min() == 1.0
    from gslrm.data.maps import to_confidence

    u = np.array([0.0, 0.25, 1.0, 2.0])
    assert to_confidence(u, "uncertainty", "inverse").tolist() == pytest.approx([1.0, 0.8, 0.5, 1 / 3])
    assert to_confidence(u, "uncertainty", "one_minus").tolist() == pytest.approx([1.0, 0.75, 0.0, 0.0])
    assert to_confidence(np.array([1.5, -0.1]), "confidence", "inverse").tolist() == [1.0, 0.0]


def test_confidence_cache_is_bounded_and_backed_by_disk(tmp_path):
    cache = ConfidenceCache(max_items=2, directory=str(tmp_path / "cache"))
    for i in range(3):
        cache.put(f"img{i}", torch.full((2, 2), float(i)))
    assert len(cache) == 2 and "img0" not in cache.items
    assert float(cache.get("img0")[0, 0]) == 0.0  # evicted from memory, still on disk
    fresh = ConfidenceCache(max_items=2, directory=str(tmp_path / "cache"))  # another run or rank
    assert float(fresh.get("img2")[1, 1]) == 2.0 and fresh.get("nope") is None


def test_disparity_from_depth():
    depth = torch.tensor([0.0, 2.0, 4.0])
    assert disparity_from_depth(depth).tolist() == [0.0, 0.5, 0.25]


# -- pseudo cameras ----------------------------------------------------------------------------------------------
def test_orbit_cameras_between_training_cameras():
    from gslrm.cameras import look_at_c2w

    azimuths = torch.deg2rad(torch.tensor([90.0, 0.0, 180.0, 270.0]))  # stored out of azimuth order
    positions = torch.stack([2 * torch.cos(azimuths), 2 * torch.sin(azimuths), torch.tensor([0.5, 0.5, 1.0, 0.5])], -1)
    c2w = look_at_c2w(positions, torch.zeros_like(positions))
    k = torch.tensor([[10.0, 10, 8, 8], [20, 20, 8, 8], [10, 10, 8, 8], [10, 10, 8, 8]])
    # sorted by azimuth: 180 (-pi), 270 (-pi/2), 0, 90; u = 0 -> the 180-degree camera itself
    cams, intrinsics = orbit_cameras(c2w, k, torch.tensor([0.0, 0.5 / 4 + 2 / 4, 3.5 / 4]))
    assert torch.allclose(cams[0], c2w[2], atol=1e-5)
    assert torch.allclose(
        cams[1, :3, 3], torch.tensor([2 * math.cos(math.pi / 4), 2 * math.sin(math.pi / 4), 0.5]), atol=1e-5
    )
    assert torch.allclose(intrinsics[1], torch.tensor([15.0, 15, 8, 8]))
    # between 90 and (wrapping) 180 degrees: 135 degrees, height halfway
    assert torch.allclose(
        cams[2, :3, 3], torch.tensor([2 * math.cos(3 * math.pi / 4), 2 * math.sin(3 * math.pi / 4), 0.75]), atol=1e-5
    )
    forward = cams[:, :3, 2]
    assert torch.allclose(forward, -torch.nn.functional.normalize(cams[:, :3, 3], dim=-1), atol=1e-5)  # at the origin


def test_pseudo_stack_pops_every_position_once_then_refills():
    stack = PseudoStack(size=5, seed=1)
    first = [stack.pop() for _ in range(5)]
    assert sorted(first) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert stack.pop() in first


# -- MiDaS: the real loading code with a tiny stand-in repository --------------------------------------------------
HUBCONF = """
import torch

dependencies = ["torch"]


class TinyDepth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.softplus(self.head(x))[:, 0] + 1.0


def DPT_Hybrid(pretrained=True, **kwargs):
    return TinyDepth()
"""


@pytest.fixture
def fake_midas(tmp_path, monkeypatch):
    """A torch hub cache holding a MiDaS stand-in (code + weights), as a user would place the real one."""
    home = tmp_path / "torch_home"
    repo = home / "hub" / "intel-isl_MiDaS_master"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    net = torch.hub.load(str(repo), "DPT_Hybrid", source="local", trust_repo=True)
    (home / "hub" / "checkpoints").mkdir()
    torch.save(net.state_dict(), home / "hub" / "checkpoints" / "dpt_hybrid_384.pt")
    return net


def test_offline_midas_errors_say_what_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(MissingWeightsError) as error:
        load_midas(MidasConfig())
    message = str(error.value)
    expected = tmp_path / "empty" / "hub" / "intel-isl_MiDaS_master"
    assert f"intel-isl_MiDaS_master not found at {expected}" in message and "\n" not in message
    assert "python -m gslrm.weights fetch midas_repo" in message and "loss.midas.repo_dir" in message
    repo = tmp_path / "empty" / "hub" / "intel-isl_MiDaS_master"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    with pytest.raises(MissingWeightsError, match=r"dpt_hybrid_384.pt not found.*fetch midas.*loss.midas.weights_path"):
        load_midas(MidasConfig())


def test_midas_estimator_normalizes_resizes_and_is_frozen(fake_midas):
    estimator = MidasEstimator(MidasConfig(input_height=32, input_width=48))
    for name, value in fake_midas.state_dict().items():
        assert torch.equal(estimator.net.state_dict()[name], value)  # the weights file was loaded
    seen = {}
    estimator.net.register_forward_hook(
        lambda module, args, out: seen.update(shape=args[0].shape, low=float(args[0].detach().min()))
    )
    images = torch.rand(2, 3, 20, 20, requires_grad=True)
    out = estimator(images)
    assert out.shape == (2, 1, 20, 20) and seen["shape"] == (2, 3, 32, 48) and seen["low"] < 0  # [-1, 1] inputs
    assert not any(p.requires_grad for p in estimator.parameters())
    out.sum().backward()  # the pseudo-view term: gradient reaches the render
    assert images.grad is not None and images.grad.abs().sum() > 0
    estimator.train()
    assert not estimator.training


# -- precomputed maps through the dataset ------------------------------------------------------------------------
def _write_priors(root, samples=("s0", "s1", "s2")):
    """priors/cam_XXX.npy holding 2 + view (depth, or uncertainty) at the raw 36x32 size, per sample."""
    for sample in samples:
        priors = root / sample / "priors"
        priors.mkdir()
        for view in range(6):
            np.save(priors / f"cam_{view:03d}.npy", np.full((32, 36), 2.0 + view, np.float32))


def test_precomputed_maps_found_by_image_stem(tiny_root):
    from gslrm.data.dataset import DataConfig, ViewDataset

    _write_priors(tiny_root)
    config = DataConfig(
        root=str(tiny_root),
        image_size=16,
        depth_maps={"dir": "priors", "kind": "depth"},
        confidence_maps={"dir": "priors", "kind": "uncertainty", "uncertainty_to_confidence": "inverse"},
    )
    sample = ViewDataset(config, "train")[0]
    assert sample["depth_prior"].shape == sample["confidence"].shape == (6, 1, 16, 16)
    assert float(sample["depth_prior"][1, 0, 8, 8]) == pytest.approx(1 / 3.0, abs=1e-6)  # disparity of depth 3
    assert float(sample["confidence"][0, 0, 8, 8]) == pytest.approx(1 / 3.0, abs=1e-6)  # 1 / (1 + 2)
    assert sample["names"][0].endswith("s0/images/cam_000.png")


def test_precomputed_maps_through_a_mapping_file_and_a_16_bit_png(tiny_root):
    from PIL import Image

    from gslrm.data.dataset import DataConfig, ViewDataset
    from gslrm.data.format import DataFormatError

    _write_priors(tiny_root, ["s0"])
    priors = tiny_root / "s0" / "priors"
    Image.fromarray(np.full((16, 18), 4000, np.uint16)).save(priors / "u.png")  # half the image size, 16 bit
    (priors / "map.json").write_text(json.dumps({f"cam_{v:03d}.png": "u.png" for v in range(6)}))
    maps = {"dir": "priors", "mapping": "map.json", "kind": "uncertainty", "png_scale": 0.001}
    sample = ViewDataset(DataConfig(root=str(tiny_root), image_size=16, confidence_maps=maps), "train")[0]
    # 4000 * 0.001 = 4 -> 1 / (1 + 4) = 0.2, resized to the image then cropped like it
    assert torch.allclose(sample["confidence"][:, 0, 4:12, 4:12], torch.tensor(0.2), atol=1e-6)
    (priors / "map.json").write_text(json.dumps({"cam_000.png": "u.png"}))
    from gslrm.data.maps import _mapping

    _mapping.cache_clear()  # mapping files are read once per process
    with pytest.raises(DataFormatError, match=r"map.json: no entry for images/cam_001.png"):
        ViewDataset(DataConfig(root=str(tiny_root), image_size=16, confidence_maps=maps), "train")[0]


def test_a_missing_precomputed_map_names_the_file(tiny_root):
    from gslrm.data.dataset import DataConfig, ViewDataset
    from gslrm.data.format import DataFormatError

    _write_priors(tiny_root)
    (tiny_root / "s1" / "priors" / "cam_002.npy").unlink()
    dataset = ViewDataset(DataConfig(root=str(tiny_root), image_size=16, depth_maps={"dir": "priors"}), "train")
    with pytest.raises(DataFormatError, match=r"s1/priors/cam_002.npy: data.depth_maps: no map for images/cam_002.png"):
        dataset[1]


# -- the pipeline on real batches ---------------------------------------------------------------------------------
def _rodent_batch(rodent_root, **overrides):
    from gslrm.data.datamodule import collate_views
    from gslrm.data.dataset import DataConfig, ViewDataset

    config = DataConfig(
        root=str(rodent_root), image_size=16, normalization={"up": [0, 0, 1]}, load_depth=True, **overrides
    )
    dataset = ViewDataset(config, "train")
    return collate_views([dataset[0], dataset[1]]), dataset


def test_runtime_confidence_is_estimated_once_per_image_across_workers(rodent_root, fake_midas):
    """Loader workers only load; the cache sits with the loss, so every image costs MiDaS 4 passes once per run."""
    from torch.utils.data import DataLoader

    from gslrm.data.datamodule import collate_views
    from gslrm.depth.priors import ConfidenceConfig, DepthPriors

    _, dataset = _rodent_batch(rodent_root)
    priors = DepthPriors(
        "ground_truth", MidasConfig(input_height=32, input_width=32), ConfidenceConfig(source="runtime")
    )
    calls = []
    priors.midas.net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_views, persistent_workers=False)
    per_epoch = []
    for _ in range(2):
        before = len(calls)
        for batch in loader:
            confidence = priors.confidence(batch, None)
            assert confidence.shape == (batch["image"].shape[0], 6, 1, 16, 16)
            assert 0 <= float(confidence.min()) and float(confidence.max()) <= 1
        per_epoch.append(sum(calls[before:]))
    images = len(dataset) * 6
    assert per_epoch == [4 * images, 0]  # 4 augmentations of every image in the first epoch, none after
    assert priors.confidence_cache.misses == images and len(priors.confidence_cache) == images


def _loss_inputs(batch, model_output, rendered, render_fn):
    from gslrm.losses.base import LossInputs

    image = batch["image"]
    return LossInputs(
        render=rendered.rgb,
        target=image[:, :, :3],
        mask=image[:, :, 3:4],
        background=batch["bg_color"],
        gaussians=model_output.gaussians,
        pixel_means=model_output.pixel_means,
        ray_o=model_output.ray_o,
        ray_d=model_output.ray_d,
        input_mask=image[:, :4, 3:4],
        depth=rendered.depth,
        batch=batch,
        render_fn=render_fn,
    )


def test_confidence_loss_preset_on_rodent_batches(rodent_root, fake_midas):
    from gslrm.depth.priors import DepthPriors
    from gslrm.losses.computer import LossComputer, LossConfig
    from gslrm.model.gslrm import GSLRM, ModelConfig
    from gslrm.predict import predict_and_render
    from gslrm.render import RenderConfig, render

    batch, _ = _rodent_batch(rodent_root)
    config = LossConfig(
        l2={"weight": 0.0},
        perceptual={"weight": 0.0},
        image={"weight": 1.0},
        depth={"weight": 0.05, "estimator": "ground_truth"},
        pseudo_depth={"weight": 0.5, "start": 0, "end": 1000, "interval": 2},
        confidence={"source": "runtime", "method": "simple"},
        midas={"input_height": 32, "input_width": 32},
    )
    computer = LossComputer(config)
    batch = DepthPriors.for_loss(config, computer.image_estimator).attach(batch)  # as the data module does
    model = GSLRM(ModelConfig(dim=64, depth=1, head_dim=32, patch_size=8))
    output, rendered = predict_and_render(model, batch, 4, RenderConfig())

    def render_fn(c2w, k):
        return render(output.gaussians, c2w, k, 16, 16, background=batch["bg_color"])

    assert computer.weights(3)["pseudo_depth"] == 0.0 and computer.weights(250)["pseudo_depth"] == pytest.approx(0.25)
    out = computer(_loss_inputs(batch, output, rendered, render_fn), step=250)
    assert {"image_loss", "depth_loss", "pseudo_depth_loss", "loss"} <= set(out)
    expected = out["image_loss"] + 0.05 * out["depth_loss"] + 0.25 * out["pseudo_depth_loss"]
    assert torch.isclose(out["loss"], expected)
    out["loss"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    # a NaN pseudo render is skipped (term 0) and counted; the total stays finite
    model.zero_grad()
    output, rendered = predict_and_render(model, batch, 4, RenderConfig())

    def nan_render(c2w, k):
        result = render_fn(c2w, k)
        result.depth = result.depth * float("nan")
        return result

    out = computer(_loss_inputs(batch, output, rendered, nan_render), step=250)
    assert float(out["pseudo_depth_loss"]) == 0.0 and float(out["pseudo_depth_skipped"]) == 1.0
    assert torch.isfinite(out["loss"])


def test_depth_estimator_needs_its_data(rodent_root):
    from gslrm.depth.priors import ConfidenceConfig, DepthPriors

    batch, _ = _rodent_batch(rodent_root)
    del batch["depth"]
    with pytest.raises(KeyError, match="data.load_depth=true"):
        DepthPriors("ground_truth", MidasConfig(), ConfidenceConfig()).disparity(batch)
    with pytest.raises(KeyError, match="data.depth_maps.dir"):
        DepthPriors("precomputed", MidasConfig(), ConfidenceConfig()).disparity(batch)
    with pytest.raises(ValueError, match="loss.depth.estimator"):
        DepthPriors("zoe", MidasConfig(), ConfidenceConfig())


def test_the_loss_config_is_checked_against_the_data_config_at_start():
    from gslrm.data.dataset import DataConfig
    from gslrm.data.format import DataFormatError
    from gslrm.depth.priors import check_data_loads_priors
    from gslrm.losses.computer import LossConfig

    def loss(**terms):
        return LossConfig(l2={"weight": 0.0}, perceptual={"weight": 0.0}, **terms)

    with pytest.raises(DataFormatError, match="data.depth_maps.dir"):
        check_data_loads_priors(loss(depth={"weight": 0.05, "estimator": "precomputed"}), DataConfig())
    with pytest.raises(DataFormatError, match="data.confidence_maps.dir"):
        check_data_loads_priors(loss(image={"weight": 1.0}, confidence={"source": "precomputed"}), DataConfig())
    with pytest.raises(DataFormatError, match="data.load_depth=true"):  # the gradient confidence reads the prior
        check_data_loads_priors(
            loss(
                image={"weight": 1.0},
                depth={"estimator": "ground_truth"},
                confidence={"source": "runtime", "method": "simple"},
            ),
            DataConfig(),
        )
    check_data_loads_priors(loss(depth={"weight": 0.05, "estimator": "ground_truth"}), DataConfig(load_depth=True))
    with pytest.raises(DataFormatError, match="loss.metric_depth: set data.load_depth=true"):
        check_data_loads_priors(loss(metric_depth={"weight": 0.5}), DataConfig())
    check_data_loads_priors(loss(metric_depth={"weight": 0.5}), DataConfig(load_depth=True))
    with pytest.raises(DataFormatError, match="loss.pixel_depth: set data.load_depth=true"):
        check_data_loads_priors(loss(pixel_depth={"weight": 0.5}), DataConfig())
    check_data_loads_priors(loss(depth={"weight": 0.0, "estimator": "precomputed"}), DataConfig())  # term off: fine


def test_the_data_module_attaches_priors_to_training_batches_only(rodent_root):
    """Depth priors are data: the data module adds depth_prior and confidence to training batches on their device;
    validation batches and batches outside a fit are left alone, and the loss terms only read them."""
    from types import SimpleNamespace

    from gslrm.data.datamodule import ViewDataModule
    from gslrm.depth.priors import DepthPriors
    from gslrm.losses.computer import LossConfig

    batch, dataset = _rodent_batch(rodent_root)
    config = LossConfig(
        l2={"weight": 0.0},
        perceptual={"weight": 0.0},
        image={"weight": 1.0},
        depth={"weight": 0.05, "estimator": "ground_truth"},
        confidence={"source": "runtime", "method": "simple"},
    )
    datamodule = ViewDataModule(dataset.config, priors=DepthPriors.for_loss(config))
    assert set(datamodule.on_after_batch_transfer(batch, 0)) == set(batch)  # no trainer: untouched
    datamodule.trainer = SimpleNamespace(training=False)
    assert "depth_prior" not in datamodule.on_after_batch_transfer(batch, 0)
    datamodule.trainer = SimpleNamespace(training=True)
    attached = datamodule.on_after_batch_transfer(batch, 0)
    b, v, _, h, w = batch["image"].shape
    assert attached["depth_prior"].shape == attached["confidence"].shape == (b, v, 1, h, w)
    assert torch.equal(attached["depth_prior"], torch.where(batch["depth"] > 0, 1 / batch["depth"].clamp_min(1e-6), 0))
    assert "depth_prior" not in batch  # the loader's batch is not modified
    assert DepthPriors.for_loss(LossConfig(perceptual={"weight": 0.0})) is None  # nothing reads priors: none built
