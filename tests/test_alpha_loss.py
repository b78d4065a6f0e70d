"""The coverage term (loss.alpha): known answers of each kind, its place in the LossComputer, and its gradient through
the renderer (plain, deferred, and our gsplat call on its CPU stand-ins)."""

import math

import pytest
import torch
from conftest import composition_error
from gsplat_cpu import gsplat_on_cpu
from test_losses import make_inputs
from test_render import cameras, one_gaussian, random_scene

from gslrm.losses.alpha import AlphaConfig, AlphaLoss, alpha_loss
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.metrics import on_black
from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig, _render_gsplat, render, render_views

RENDERED = torch.tensor([0.0, 0.5, 0.9, 0.2]).view(1, 1, 1, 2, 2)
TARGET = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 2, 2)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("l1", (0.0 + 0.5 + 0.1 + 0.2) / 4),  # 0.2
        ("l2", (0.0 + 0.25 + 0.01 + 0.04) / 4),  # 0.075
        # -log(1 - 1e-4) [0 clamped to 1e-4, target 0] - log 0.5 - log 0.9 - log 0.8, over 4 pixels = 0.2554378
        ("bce", (-math.log(1 - 1e-4) - math.log(0.5) - math.log(0.9) - math.log(0.8)) / 4),
        # intersection 0.5 + 0.9 = 1.4, union 0 + 1 + 1 + 0.2 = 2.2: 1 - 1.4 / 2.2 = 0.363636
        ("iou", 1.0 - 1.4 / 2.2),
    ],
)
def test_alpha_loss_known_answers(kind, expected):
    assert alpha_loss(RENDERED, TARGET, kind).item() == pytest.approx(expected, rel=1e-6)
    inputs = make_inputs(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 1, 3, 2, 2), mask=TARGET)
    inputs.alpha = RENDERED
    assert AlphaLoss(AlphaConfig(weight=1.0, kind=kind))(inputs).item() == pytest.approx(expected, rel=1e-6)
    # a perfect alpha: 0, except bce's clamp floor -log(1 - 1e-4) per pixel
    perfect = -math.log(1 - 1e-4) if kind == "bce" else 0.0
    assert alpha_loss(TARGET, TARGET, kind).item() == pytest.approx(perfect, abs=1e-7)  # fp32


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # weights 1 + (3 - 1) m = [1, 3, 3, 1] on the errors of the known answers above
        ("l1", (0.0 + 3 * 0.5 + 3 * 0.1 + 0.2) / 4),  # 0.5
        ("l2", (0.0 + 3 * 0.25 + 3 * 0.01 + 0.04) / 4),  # 0.205
        ("bce", (-math.log(1 - 1e-4) - 3 * math.log(0.5) - 3 * math.log(0.9) - math.log(0.8)) / 4),
    ],
)
def test_foreground_weight_weighs_the_animal_s_pixels(kind, expected):
    """A missed piece of the animal costs foreground_weight times a spill into empty space; 1 is the plain mean."""
    assert alpha_loss(RENDERED, TARGET, kind, foreground_weight=3.0).item() == pytest.approx(expected, rel=1e-6)
    inputs = make_inputs(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 1, 3, 2, 2), mask=TARGET)
    inputs.alpha = RENDERED
    term = AlphaLoss(AlphaConfig(weight=1.0, kind=kind, foreground_weight=3.0))
    assert term(inputs).item() == pytest.approx(expected, rel=1e-6)
    # a spill of 0.4 and a miss of 0.4 (one pixel each): equal at weight 1, the miss 3x the spill at weight 3
    spill, miss = torch.tensor([0.4, 1.0]), torch.tensor([0.0, 0.6])
    truth = torch.tensor([0.0, 1.0])
    assert alpha_loss(spill, truth, kind) == pytest.approx(alpha_loss(miss, truth, kind).item(), rel=1e-6)
    if kind != "bce":  # bce's clamp floor on the exact pixel breaks the exact ratio
        ratio = alpha_loss(miss, truth, kind, 3.0) / alpha_loss(spill, truth, kind, 3.0)
        assert ratio.item() == pytest.approx(3.0, rel=1e-6)


def test_foreground_weight_is_checked():
    with pytest.raises(ValueError, match=r"^loss\.alpha\.foreground_weight: expected > 0, not 0\.0$"):
        LossConfig(alpha={"weight": 1.0, "foreground_weight": 0.0})
    with pytest.raises(ValueError, match=r"^loss\.alpha\.foreground_weight: the iou kind weighs no pixel"):
        LossConfig(alpha={"weight": 1.0, "kind": "iou", "foreground_weight": 2.0})
    from conftest import compose

    from gslrm.config import build

    assert build(compose("config", "loss.alpha.foreground_weight=2").loss).alpha.foreground_weight == 2.0


def test_iou_kind_weighs_each_view_alike_and_an_empty_view_is_zero():
    """Per view, then the mean: a view whose animal and render are both empty adds 0 (not 0/0); a small view's
    silhouette counts as much as a large one's."""
    empty = torch.zeros(1, 1, 1, 2, 2)
    both = torch.cat([RENDERED, empty], dim=1), torch.cat([TARGET, empty], dim=1)  # two views
    assert alpha_loss(*both, "iou").item() == pytest.approx((1.0 - 1.4 / 2.2 + 0.0) / 2, rel=1e-6)
    large_rendered, large_target = RENDERED.repeat(1, 1, 1, 4, 4), TARGET.repeat(1, 1, 1, 4, 4)  # 16x the pixels
    assert alpha_loss(large_rendered, large_target, "iou").item() == pytest.approx(1.0 - 1.4 / 2.2, rel=1e-6)


def test_alpha_kind_typo_and_missing_alpha_are_named():
    message = composition_error("config", "loss.alpha.kind=mse")
    assert "loss.alpha.kind=mse" in message and "Invalid value 'mse', expected one of [l1, l2, bce, iou]" in message
    with pytest.raises(
        ValueError, match=r"^loss\.alpha\.kind: Invalid value 'mse', expected one of \[l1, l2, bce, iou\]$"
    ):
        LossConfig(alpha={"weight": 1.0, "kind": "mse"})  # a config from code or a checkpoint is checked as YAML is
    inputs = make_inputs(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 1, 3, 2, 2), mask=TARGET)
    with pytest.raises(ValueError, match="rendered alpha"):
        AlphaLoss(AlphaConfig(weight=1.0))(inputs)


def test_computer_adds_the_weighted_alpha_term_and_reports_opacity_iou():
    render_rgb = torch.full((1, 1, 3, 2, 2), 0.5)
    inputs = make_inputs(render_rgb, torch.full((1, 1, 3, 2, 2), 0.25), mask=TARGET)
    inputs.alpha = RENDERED
    computer = LossComputer(LossConfig(l2={"weight": 1.0}, perceptual={"weight": 0.0}, alpha={"weight": 2.0}))
    out = computer(inputs, step=0)
    assert out["alpha_loss"].item() == pytest.approx(0.075, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.0625 + 2.0 * 0.075, rel=1e-6)  # mse (0.25^2) + 2 x alpha l2
    # rendered alpha > 0.5 at pixel 2 only, target at pixels 1 and 2: IoU 1/2
    assert out["opacity_iou"].item() == pytest.approx(0.5)
    assert "alpha_loss" not in LossComputer(LossConfig(perceptual={"weight": 0.0}))(inputs, step=0)


def test_facelift_loss_stays_without_the_alpha_term_and_default_has_it():
    from conftest import compose

    from gslrm.config import build

    facelift = build(compose("config", "loss=facelift").loss)
    default = build(compose("config").loss)
    masked = build(compose("config", "loss=masked").loss)
    assert facelift.alpha.weight == 0 and facelift.background == "data"
    assert default.alpha.weight > 0 and masked.alpha.weight > 0
    assert default.perceptual.weight == facelift.perceptual.weight and default.l2.weight == facelift.l2.weight


def test_no_vgg_loss_is_the_default_with_ssim_in_the_perceptual_terms_place():
    from dataclasses import replace

    from conftest import compose

    from gslrm.config import build

    default, no_vgg = build(compose("config").loss), build(compose("config", "loss=no_vgg").loss)
    assert no_vgg.perceptual.weight == 0 and no_vgg.ssim.weight == 0.5 and not no_vgg.ssim.masked
    assert replace(no_vgg, perceptual=default.perceptual, ssim=default.ssim) == default
    # A uniform grey render (0.5) of a white view (1.0), half of it covered: the SSIM of two flat images is its
    # luminance term alone, (2 * 0.5 * 1 + C1) / (0.25 + 1 + C1) with C1 = 1e-4, so the loss is
    # MSE 0.25 + 0.5 x (1 - 0.80008) + coverage 1.0 x mean((0.5 - mask)^2) = 0.25 + 0.09996 + 0.25
    computer = LossComputer(no_vgg)
    assert set(computer.terms) == {"l2", "ssim", "alpha"}
    mask = torch.zeros(1, 1, 1, 16, 16)
    mask[..., :8] = 1.0
    inputs = make_inputs(torch.full((1, 1, 3, 16, 16), 0.5), torch.ones(1, 1, 3, 16, 16), mask=mask)
    inputs.alpha = torch.full((1, 1, 1, 16, 16), 0.5)
    ssim = (2 * 0.5 + 1e-4) / (0.25 + 1.0 + 1e-4)
    out = computer(inputs, step=0)
    assert out["ssim_loss"].item() == pytest.approx(1 - ssim, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.25 + 0.5 * (1 - ssim) + 0.25, rel=1e-5)


def coverage_scene(dtype):
    """Two Gaussians in front of a 16 px camera, a target mask covering the left half."""
    a = one_gaussian(-0.15, 0.0, 0.0, 0.3, 0.6, [0.2, 0.3, 0.4], dtype)
    b = one_gaussian(0.2, 0.05, 0.1, 0.25, 0.7, [0.9, 0.1, 0.1], dtype)
    scene = Gaussians(*(torch.cat([getattr(a, n), getattr(b, n)], dim=1) for n in LEAVES))
    c2w, k = cameras(1, 2, 16, dtype=dtype)
    target = torch.zeros(1, 2, 1, 16, 16, dtype=dtype)
    target[..., :8] = 1.0
    return scene, c2w, k, target


LEAVES = ("means", "features", "scales", "quats", "opacities")


@pytest.mark.parametrize("kind", ["l1", "l2", "bce", "iou"])
def test_alpha_loss_gradient_through_the_renderer_matches_finite_differences(kind):
    scene, c2w, k, target = coverage_scene(torch.float64)
    logits = torch.logit(scene.opacities).clone().requires_grad_(True)
    means = scene.means.clone().requires_grad_(True)

    def loss(logits, means):
        g = Gaussians(means, scene.features, scene.scales, scene.quats, torch.sigmoid(logits))
        return alpha_loss(render(g, c2w, k, 16, 16).alpha, target, kind)

    value = loss(logits, means)
    grad_logits, grad_means = torch.autograd.grad(value, (logits, means))
    assert grad_logits.abs().max() > 1e-4  # the term reaches opacity
    eps = 1e-6
    for i in range(2):
        step = torch.zeros_like(logits)
        step[0, i] = eps
        numeric = (loss(logits + step, means) - loss(logits - step, means)) / (2 * eps)
        assert grad_logits[0, i].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-9)
        for axis in range(3):
            step = torch.zeros_like(means)
            step[0, i, axis] = eps
            numeric = (loss(logits, means + step) - loss(logits, means - step)) / (2 * eps)
            assert grad_means[0, i, axis].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-9)


def _alpha_grads(scene: Gaussians, draw, target, kind="l2"):
    leaves = [getattr(scene, name).detach().clone().requires_grad_(True) for name in LEAVES]
    alpha = draw(Gaussians(*leaves))
    return torch.autograd.grad(alpha_loss(alpha, target, kind), leaves)


def test_alpha_loss_gradients_deferred_and_through_the_gsplat_call_equal_the_plain_path(monkeypatch):
    scene = random_scene(300, batch=2, dtype=torch.float64)
    c2w, k = cameras(2, 3, 24, dtype=torch.float64)
    target = (torch.rand(2, 3, 1, 24, 24, dtype=torch.float64) > 0.5).double()
    background = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    plain = _alpha_grads(scene, lambda s: render(s, c2w, k, 24, 24, background, deferred=False).alpha, target)
    deferred = _alpha_grads(scene, lambda s: render(s, c2w, k, 24, 24, background, deferred=True).alpha, target)
    for a, b in zip(plain, deferred, strict=True):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, a.abs().max().item())
    # our CUDA call on gsplat's CPU references (fp32 as gsplat's kernels): alpha is channel 4 of what it returns
    scene32, c2w32, k32, target32 = scene.float(), c2w.float(), k.float(), target.float()
    backgrounds = background.float()[:, None].expand(-1, 3, -1)
    settings = RenderConfig(cpu_backend="compiled")

    def cpu_alpha(s):
        return render_views(s, c2w32, k32, 24, 24, background.float(), settings)[..., 4:].permute(0, 1, 4, 2, 3)

    expected = _alpha_grads(scene32, cpu_alpha, target32)
    with gsplat_on_cpu(monkeypatch):
        via_gsplat = _alpha_grads(
            scene32,
            lambda s: _render_gsplat(s, c2w32, k32, 24, 24, backgrounds)[..., 4:].permute(0, 1, 4, 2, 3),
            target32,
        )
    for a, b in zip(expected, via_gsplat, strict=True):
        assert (a - b).abs().max() <= 2e-4 * max(1e-6, a.abs().max().item())


def test_on_black_is_exact_for_composited_images():
    foreground = torch.tensor([0.2, 0.6, 0.9]).view(3, 1, 1).expand(3, 2, 2)
    alpha = torch.tensor([[1.0, 0.5], [0.25, 0.0]]).view(1, 2, 2)
    background = torch.tensor([1.0, 1.0, 1.0])
    composited = foreground * alpha + background[:, None, None] * (1 - alpha)
    assert torch.allclose(on_black(composited, alpha, background), foreground * alpha, atol=1e-7)
    # fog: an opaque white render where the truth is empty space is white on black, not background
    assert torch.equal(on_black(torch.ones(3, 1, 1), torch.ones(1, 1, 1), background), torch.ones(3, 1, 1))
