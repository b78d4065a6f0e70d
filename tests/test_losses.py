"""Known-answer tests of every loss term and of the warmup switches (numbers worked out by hand)."""

import math

import pytest
import torch
from pytorch_msssim import ssim as reference_ssim

from gslrm.losses.base import LossInputs
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.l2 import L2Config, L2Loss, masked_mse
from gslrm.losses.metric_depth import MetricDepthConfig, MetricDepthLoss
from gslrm.losses.metrics import (
    depth_abs_rel,
    mask_iou,
    per_image_masked_psnr,
    per_image_psnr,
    thin_parts,
    thin_recall,
)
from gslrm.losses.perceptual import PerceptualConfig, PerceptualLoss
from gslrm.losses.pixel_depth import PixelDepthConfig, PixelDepthLoss, pixel_z_depth
from gslrm.losses.pixelalign import PixelAlignConfig, PixelAlignLoss
from gslrm.losses.pointsdist import PointsDistConfig, PointsDistLoss
from gslrm.losses.ssim import SSIMConfig, SSIMLoss, masked_ssim, ssim_map
from gslrm.model.gaussians import to_gs
from gslrm.weights import MissingWeightsError


def make_inputs(render, target, mask=None, pixel_means=None, ray_o=None, ray_d=None, opacities=None):
    b, v, _, h, w = render.shape
    mask = torch.ones(b, v, 1, h, w) if mask is None else mask
    raw = torch.zeros(b, 4, 14)
    if opacities is not None:
        raw[..., 13] = torch.logit(opacities) + 2.0
    shape = (b, 1, 3, h, w)
    return LossInputs(
        render=render,
        target=target,
        mask=mask,
        background=torch.ones(b, 3),
        gaussians=to_gs(raw),
        pixel_means=torch.zeros(shape) if pixel_means is None else pixel_means,
        ray_o=torch.zeros(shape) if ray_o is None else ray_o,
        ray_d=torch.zeros(shape) if ray_d is None else ray_d,
        input_mask=mask[:, :1],
    )


def test_l2_and_masked_l2_known_answer():
    render = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 1, 2, 2).expand(1, 1, 3, 2, 2)
    target = torch.zeros(1, 1, 3, 2, 2)
    mask = torch.tensor([1.0, 0.2, 0.9, 0.0]).view(1, 1, 1, 2, 2)  # foreground: pixels 0 and 2
    inputs = make_inputs(render, target, mask)
    # plain: mean of (0, 0.25, 1, 1) = 0.5625; masked: (0 + 1) * 3 / (2 * 3) = 0.5
    assert torch.isclose(L2Loss(L2Config())(inputs), torch.tensor(0.5625))
    assert torch.isclose(L2Loss(L2Config(masked=True))(inputs), torch.tensor(0.5))
    # empty mask: count clamped at 1, loss 0
    assert masked_mse(render, target, torch.zeros_like(mask)) == 0


def test_ssim_loss_matches_pytorch_msssim_and_its_map():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    assert torch.isclose(ssim_map(x, y).mean(), reference_ssim(x, y, data_range=1.0), atol=1e-6)
    inputs = make_inputs(x[None], (x * 0.7 + 0.1)[None])
    value = SSIMLoss(SSIMConfig())(inputs)
    assert torch.isclose(value, 1 - reference_ssim(x, x * 0.7 + 0.1, data_range=1.0).clamp(0, 1), atol=1e-6)


def test_masked_ssim_on_constant_regions_and_never_negative():
    target = torch.full((1, 3, 32, 32), 0.3)
    render = target.clone()
    render[..., :, 24:] = 0.9  # wrong only far (> 5 px) outside the mask
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 4:12] = 1.0
    assert torch.isclose(masked_ssim(render, target, mask), torch.tensor(1.0), atol=1e-6)
    inputs = make_inputs(render[None], target[None], mask[None])
    assert SSIMLoss(SSIMConfig(masked=True))(inputs).abs() < 1e-6
    # anti-correlated structure inside the mask: SSIM < 0 there, the loss is clamped to exactly 1, never above
    pattern = (torch.arange(32) % 2).float().view(1, 1, 1, 32).expand(1, 3, 32, 32)
    anti = make_inputs((1 - pattern)[None], pattern[None], torch.ones(1, 1, 1, 32, 32))
    assert ssim_map(1 - pattern, pattern).mean() < 0
    assert SSIMLoss(SSIMConfig(masked=True))(anti) == 1.0


def test_pixelalign_known_answer():
    # a mean 0.3 off its ray (ray along +y from the origin); masked by alpha 0.5 -> 0.15 on one pixel of two
    ray_o = torch.zeros(1, 1, 3, 1, 2)
    ray_d = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 1, 2)
    means = torch.tensor([[0.3, 2.0, 0.0], [0.0, 1.0, 0.0]]).T.reshape(1, 1, 3, 1, 2)
    mask = torch.tensor([0.5, 1.0]).view(1, 1, 1, 1, 2)
    inputs = make_inputs(torch.zeros(1, 1, 3, 1, 2), torch.zeros(1, 1, 3, 1, 2), mask, means, ray_o, ray_d)
    assert torch.isclose(PixelAlignLoss(PixelAlignConfig(masked=False))(inputs), torch.tensor(0.15))
    assert torch.isclose(PixelAlignLoss(PixelAlignConfig(masked=True))(inputs), torch.tensor(0.075))


def test_pointsdist_known_answer():
    # camera at distance 2 (|o| = 2), distances 1 and 3: mean 2, std (unbiased) sqrt(2);
    # targets (-1, +1)/sqrt(2) * 0.5 + 2 = 2 -+ 0.35355; loss = mean((1 - 1.64645)^2, (3 - 2.35355)^2) = 0.41789
    ray_o = torch.tensor([0.0, -2.0, 0.0]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 1, 2)
    ray_d = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 1, 2)
    means = ray_o + torch.tensor([1.0, 3.0]).view(1, 1, 1, 1, 2) * ray_d
    inputs = make_inputs(torch.zeros(1, 1, 3, 1, 2), torch.zeros(1, 1, 3, 1, 2), None, means, ray_o, ray_d)
    expected = ((1 - (2 - 0.5 / math.sqrt(2))) ** 2 + (3 - (2 + 0.5 / math.sqrt(2))) ** 2) / 2
    assert abs(PointsDistLoss(PointsDistConfig())(inputs).item() - expected) < 1e-6


def test_metric_depth_known_answer_and_its_errors():
    # 4 pixels: truth 2 (error 0.5 -> 0.25), truth 4 (error 1 -> 0.25), background (mask 0), unknown depth (0):
    # mean over the 2 valid pixels = 0.25; the rendered depth gets d(loss)/dd = sign / (d_gt * 2)
    rendered = torch.tensor([2.5, 3.0, 9.0, 9.0]).view(1, 1, 1, 1, 4).requires_grad_()
    truth = torch.tensor([2.0, 4.0, 5.0, 0.0]).view(1, 1, 1, 1, 4)
    mask = torch.tensor([1.0, 0.8, 0.0, 1.0]).view(1, 1, 1, 1, 4)
    loss = depth_abs_rel(rendered, truth, mask)  # the term's formula, shared with validation
    assert torch.isclose(loss, torch.tensor(0.25))
    loss.backward()
    assert torch.allclose(rendered.grad.flatten(), torch.tensor([0.25, -0.125, 0.0, 0.0]))
    assert depth_abs_rel(rendered, torch.zeros_like(truth), mask).item() == 0.0  # no valid pixel: 0, not NaN

    image = torch.zeros(1, 1, 3, 1, 4)
    inputs = make_inputs(image, image, mask)
    term = MetricDepthLoss(MetricDepthConfig(weight=1.0))
    with pytest.raises(ValueError, match="rendered depth"):
        term(inputs)
    inputs.depth = rendered.detach()
    with pytest.raises(KeyError, match="data.load_depth=true"):
        term(inputs)
    inputs.batch = {"depth": truth}
    assert torch.isclose(term(inputs), torch.tensor(0.25))


def test_pixel_depth_known_answer_in_a_turned_camera():
    # one input view, camera at (1, 0, 0) turned so that its viewing axis (+z) is world -x (a 90 deg turn about y),
    # and a second view (a target, not an input) that the term must not read
    c2w = torch.eye(4).repeat(1, 2, 1, 1)
    c2w[0, 0, :3, :3] = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    c2w[0, 0, :3, 3] = torch.tensor([1.0, 0.0, 0.0])
    ray_o = c2w[0, 0, :3, 3].view(1, 1, 3, 1, 1).expand(1, 1, 3, 1, 3)
    # means 2 units along the axis and 0.5 sideways (z 2), 3 along (z 3), 9 along on the background (not counted)
    offsets = torch.tensor([[-2.0, 0.5, 0.0], [-3.0, 0.0, 0.0], [-9.0, 0.0, 0.0]]).T.reshape(1, 1, 3, 1, 3)
    means = (ray_o + offsets).requires_grad_()
    assert torch.allclose(pixel_z_depth(means, ray_o, c2w[:, :1]).flatten(), torch.tensor([2.0, 3.0, 9.0]))
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 1, 3).repeat(1, 2, 1, 1, 1)
    inputs = make_inputs(torch.zeros(1, 2, 3, 1, 3), torch.zeros(1, 2, 3, 1, 3), mask, means, ray_o, means.detach())
    term = PixelDepthLoss(PixelDepthConfig(weight=1.0))
    with pytest.raises(KeyError, match="data.load_depth=true"):
        term(inputs)
    # truth 2 (error 0) and 2.5 (error 0.5 / 2.5 = 0.2): mean 0.1; the target view's depth is not read
    truth = torch.tensor([[2.0, 2.5, 1.0], [50.0, 50.0, 50.0]]).view(1, 2, 1, 1, 3)
    inputs.batch = {"c2w": c2w, "depth": truth}
    loss = term(inputs)
    assert torch.isclose(loss, torch.tensor(0.1))
    loss.backward()
    # d(loss)/d(mean) = sign(z - z_gt) / (z_gt * 2 valid pixels) along the viewing axis (-x): only the second pixel
    expected = torch.zeros(3, 3)
    expected[0, 1] = -1 / (2.5 * 2)
    assert torch.allclose(means.grad.reshape(3, 3), expected)


def test_pixel_depth_weighs_the_thin_parts():
    # a 5x5 input view: a 3x3 body (depth right) and one lone pixel, a thin part (z 3 against 2: error 0.5)
    mask = torch.zeros(1, 1, 1, 5, 5)
    mask[..., :3, :3] = 1.0
    mask[..., 4, 4] = 1.0
    truth = torch.full((1, 1, 1, 5, 5), 2.0)
    z = truth.clone()
    z[..., 4, 4] = 3.0
    means = torch.cat([torch.zeros(1, 1, 2, 5, 5), z], dim=2)  # camera at the origin looking along +z
    origin = torch.zeros(1, 1, 3, 5, 5)
    inputs = make_inputs(torch.zeros(1, 1, 3, 5, 5), torch.zeros(1, 1, 3, 5, 5), mask, means, origin, origin)
    inputs.batch = {"c2w": torch.eye(4).view(1, 1, 4, 4), "depth": truth}
    plain = PixelDepthLoss(PixelDepthConfig(weight=1.0))(inputs)
    assert torch.isclose(plain, torch.tensor(0.5 / 10))
    weighted = PixelDepthLoss(PixelDepthConfig(weight=1.0, thin_weight=4.0))(inputs)
    assert torch.isclose(weighted, torch.tensor(4 * 0.5 / (9 + 4)))
    with pytest.raises(ValueError, match="thin_weight"):
        PixelDepthConfig(thin_weight=-1.0)


def test_perceptual_formula_with_random_vgg():
    torch.manual_seed(0)
    term = PerceptualLoss(PerceptualConfig(weight=0.5, pretrained=False))
    assert not any(p.requires_grad for p in term.parameters()) and not term.training
    x, y = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 2, 3, 16, 16)
    inputs = make_inputs(x, y)
    mean = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)
    xn, yn = x.flatten(0, 1) * 255 - mean, y.flatten(0, 1) * 255 - mean
    expected = (xn - yn).abs().mean()
    for weight, fx, fy in zip([1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5], term.net(xn), term.net(yn), strict=True):
        expected = expected + weight * (fx - fy).abs().mean()
    assert torch.isclose(term(inputs), expected / 255, rtol=1e-5)
    assert [f.shape[1] for f in term.net(xn)] == [64, 128, 256, 512, 512]
    assert term(make_inputs(x, x)) == 0


def test_perceptual_offline_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("VGG19_WEIGHTS_PATH", raising=False)
    with pytest.raises(MissingWeightsError) as info:
        PerceptualLoss(PerceptualConfig(weight=0.5))
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and "loss.perceptual.weights_path" in message and "\n" not in message


def test_perceptual_loads_torchvision_weights_with_folded_normalization(tmp_path):
    """A torchvision-layout checkpoint made here: conv1 fed (x - mean)/std equals ours fed x*255 - mean_255."""
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg19(weights=None)
    path = tmp_path / "vgg19.pth"
    torch.save(vgg.state_dict(), path)
    term = PerceptualLoss(PerceptualConfig(weight=0.5, weights_path=str(path)))
    x = torch.rand(1, 3, 8, 8)
    ours = term.net.conv1(x * 255 - term.mean)[..., 1:-1, 1:-1]
    normalized = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    theirs = vgg.features[0](normalized)[..., 1:-1, 1:-1]
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_perceptual_loads_facelift_mat(tmp_path, monkeypatch):
    import numpy as np
    from scipy.io import savemat

    from gslrm.losses.perceptual import CHANNELS

    layers = np.empty((1, 37), dtype=object)
    previous, indices = 3, [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    kernels = {}
    for position in range(37):
        weights = np.empty((1, 2), dtype=object)
        if position in indices:
            out = CHANNELS[indices.index(position)]
            kernels[position] = np.random.rand(3, 3, previous, out).astype(np.float32)
            weights[0, 0], weights[0, 1] = kernels[position], np.arange(out, dtype=np.float32).reshape(out, 1)
            previous = out
        else:
            weights[0, 0], weights[0, 1] = np.zeros(1), np.zeros(1)
        layers[0, position] = {"weights": weights, "name": f"layer{position}"}
    savemat(tmp_path / "vgg.mat", {"layers": layers})
    monkeypatch.setenv("VGG19_WEIGHTS_PATH", str(tmp_path / "vgg.mat"))
    term = PerceptualLoss(PerceptualConfig(weight=0.5))
    assert torch.allclose(term.net.conv3.weight, torch.from_numpy(kernels[5]).permute(3, 2, 0, 1))
    assert torch.equal(term.net.conv16.bias, torch.arange(512, dtype=torch.float32))


def test_lpips_term_with_random_backbone_and_offline_error(tmp_path, monkeypatch):
    from gslrm.losses.lpips import LPIPSConfig, LPIPSLoss

    term = LPIPSLoss(LPIPSConfig(weight=1.0, pretrained_backbone=False))
    x = torch.rand(1, 1, 3, 32, 32)
    assert term(make_inputs(x, x)).abs() < 1e-6 and term(make_inputs(x, 1 - x)) > 0
    assert not any(p.requires_grad for p in term.parameters())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        LPIPSLoss(LPIPSConfig(weight=1.0))


def test_warmup_switches():
    computer = LossComputer(
        LossConfig(
            perceptual={"weight": 0.5, "pretrained": False},
            lpips={"weight": 0.2, "pretrained_backbone": False},
            l2_warmup_steps=500,
            pointsdist_warmup_steps=1000,
        )
    )
    early, middle, late = computer.weights(0), computer.weights(700), computer.weights(1000)
    assert early["l2"] == 0 and early["perceptual"] == 0 and early["lpips"] == 0 and early["pointsdist"] == 0.1
    assert middle["l2"] == 0 and middle["perceptual"] == 0 and middle["lpips"] == 0.2 and middle["pointsdist"] == 0.1
    assert late == {
        "l2": 1.0,
        "perceptual": 0.5,
        "lpips": 0.2,
        "ssim": 0.0,
        "alpha": 0.0,
        "pixelalign": 0.0,
        "pointsdist": 0.0,
        "image": 0.0,
        "depth": 0.0,
        "pseudo_depth": 0.0,
        "metric_depth": 0.0,
        "own_view": 0.0,
        "pixel_depth": 0.0,
        "mask_distance": 0.0,
    }
    assert not computer.clip_xyz_allowed(999) and computer.clip_xyz_allowed(1000)
    only_l2 = LossComputer(LossConfig(perceptual={"weight": 0.5, "pretrained": False}, l2_warmup_steps=500))
    assert only_l2.weights(499)["perceptual"] == 0 and only_l2.weights(500)["perceptual"] == 0.5


def test_computer_sums_weighted_terms_and_reports_diagnostics():
    computer = LossComputer(
        LossConfig(l2={"weight": 1.0, "masked": False}, perceptual={"weight": 0.0}, ssim={"weight": 0.5})
    )
    assert set(computer.terms) == {"l2", "ssim"}  # disabled terms are not even built
    torch.manual_seed(0)
    render, target = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 2, 3, 16, 16)
    out = computer(make_inputs(render, target, opacities=torch.tensor([[0.01, 0.1, 0.5, 0.9]])), step=0)
    assert torch.isclose(out["loss"], out["l2_loss"] + 0.5 * out["ssim_loss"])
    assert torch.isclose(out["norm_ssim"], out["ssim_loss"] / out["l2_loss"])
    assert torch.isclose(out["psnr"], -10 * torch.log10(out["l2_loss"]))
    assert out["gaussians_usage"] == 0.75  # opacities above 0.05
    assert out["gt_max"] <= 1 and out["pred_min"] >= 0


def test_typo_in_a_term_names_the_key():
    with pytest.raises(TypeError, match="wieght"):
        LossConfig(ssim={"wieght": 1.0})


def test_thin_parts_are_what_an_opening_removes_and_their_recall():
    # an 8x8 view: a 4x4 body at rows 2-5, columns 0-3; a 1-px tail (row 3, columns 4-7); a 2-px wide leg below the
    # body (rows 6-7, columns 1-2); a lone pixel at the corner (0, 7)
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., 2:6, 0:4] = 1.0
    alpha[..., 3, 4:8] = 1.0
    alpha[..., 6:8, 1:3] = 1.0
    alpha[..., 0, 7] = 0.9
    thin = thin_parts(alpha, 3)[0, 0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[3, 4:8] = expected[6:8, 1:3] = expected[0, 7] = True  # the body survives a 3x3 opening, nothing else
    assert torch.equal(thin, expected)
    expected_two = torch.zeros(8, 8, dtype=torch.bool)
    expected_two[3, 4:8] = expected_two[0, 7] = True  # a 2x2 opening keeps the 2-px leg
    assert torch.equal(thin_parts(alpha, 2)[0, 0], expected_two)
    drawn = torch.zeros(1, 1, 8, 8)
    drawn[..., 3, 4:6] = 0.8  # half the tail
    drawn[..., 6:8, 1:3] = 0.6  # the leg
    drawn[..., 0, 7] = 0.5  # not over 0.5: not drawn
    assert torch.isclose(thin_recall(drawn, alpha), torch.tensor(6 / 9))
    assert thin_recall(drawn, alpha[..., 2:6, 0:4].repeat(1, 1, 2, 2)).isnan()  # no thin part: NaN, not 0 or 1
    with pytest.raises(ValueError, match="at least 2"):
        thin_parts(alpha, 1)


def test_mask_iou_and_psnr_metrics():
    background = torch.ones(1, 3)
    render = torch.ones(1, 3, 2, 2)
    render[..., 0, 0] = 0.0  # predicted foreground: pixel (0,0)
    alpha = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)  # truth: top row
    assert torch.isclose(mask_iou(render, alpha, background), torch.tensor(0.5))
    target = torch.zeros(1, 3, 2, 2)
    assert torch.isclose(per_image_psnr(render, target), torch.tensor(-10 * math.log10(0.75)))
    # foreground (top row): errors 0 and 1 -> mse 0.5
    assert torch.isclose(per_image_masked_psnr(render, target, alpha), torch.tensor(-10 * math.log10(0.5)))
    assert per_image_masked_psnr(render, target, torch.zeros_like(alpha)).isnan().all()
