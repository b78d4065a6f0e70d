"""Own-view coverage (loss.own_view): each input view's alpha drawn by its own pixel Gaussians alone."""

import pytest
import torch

from gslrm.losses.base import LossInputs
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.own_view import OwnViewConfig, OwnViewLoss, own_view_gaussians
from gslrm.model.gaussians import SH_C0, Gaussians
from gslrm.render import RenderConfig


def scene(opacities):
    """2 opaque token Gaussians first, then one pixel Gaussian per 1x1-pixel view; every camera at the origin looking
    +z with its pixel's centre on the axis, so each pixel Gaussian (on the axis, at z = 2, 3, ...) lies on the ray of
    its own view's one pixel, and so do the tokens (z = 1, in front of everything)."""
    views = len(opacities)
    z = torch.tensor([1.0, 1.0] + [2.0 + i for i in range(views)])
    n = len(z)
    gaussians = Gaussians(
        means=torch.stack([torch.zeros(n), torch.zeros(n), z], dim=-1)[None],
        features=torch.full((1, n, 1, 3), (0.3 - 0.5) / SH_C0),
        scales=torch.full((1, n, 3), 0.01),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(1, n, 4).clone(),
        opacities=torch.tensor([[0.9, 0.9, *opacities]], requires_grad=True),
    )
    batch = {
        "c2w": torch.eye(4).expand(1, views, 4, 4).clone(),
        "fxfycxcy": torch.tensor([1.0, 1.0, 0.5, 0.5]).expand(1, views, 4).clone(),
    }
    return gaussians, batch


def inputs_for(gaussians, batch, masks):
    mask = torch.tensor(masks, dtype=torch.float32).view(1, len(masks), 1, 1, 1)
    zeros = torch.zeros(1, len(masks), 3, 1, 1)
    return LossInputs(
        render=zeros,
        target=zeros,
        mask=mask,
        background=torch.ones(1, 3),
        gaussians=gaussians,
        pixel_means=zeros,
        ray_o=zeros,
        ray_d=zeros,
        input_mask=mask,
        batch=batch,
        render_settings=RenderConfig(),
    )


def test_each_view_is_drawn_by_its_own_gaussians_known_answer():
    """View 0's pixel Gaussian (opacity 0.8) against mask 1, view 1's (0.3) against mask 0: l2 = ((0.8 - 1)^2 +
    0.3^2) / 2 = 0.065. Drawn with everything, view 0's pixel would be 1 - 0.1 * 0.1 * 0.2 * 0.7 (the tokens in
    front and view 1's Gaussian behind): the term sees neither the tokens nor the other view's Gaussians."""
    gaussians, batch = scene([0.8, 0.3])
    loss = OwnViewLoss(OwnViewConfig(weight=1.0))(inputs_for(gaussians, batch, [1.0, 0.0]))
    assert torch.isclose(loss, torch.tensor(0.065), atol=1e-5)
    loss.backward()
    grad = gaussians.opacities.grad[0]
    # d/do of (o0 - 1)^2 / 2 = o0 - 1 = -0.2; of o1^2 / 2 = o1 = 0.3; the tokens are not in the term
    assert torch.allclose(grad, torch.tensor([0.0, 0.0, -0.2, 0.3]), atol=1e-5)
    l1 = OwnViewLoss(OwnViewConfig(weight=1.0, kind="l1"))(inputs_for(*scene([0.8, 0.3]), [1.0, 0.0]))
    assert torch.isclose(l1, torch.tensor((0.2 + 0.3) / 2), atol=1e-5)


def test_own_view_gaussians_splits_the_pixels_view_by_view():
    means = torch.arange(2 * (2 + 3 * 4) * 3, dtype=torch.float32).view(2, 14, 3)
    g = Gaussians(means, torch.zeros(2, 14, 1, 3), torch.ones(2, 14, 3), torch.ones(2, 14, 4), torch.ones(2, 14))
    split = own_view_gaussians(g, views=3, pixels=4)
    assert split.means.shape == (6, 4, 3) and split.features.shape == (6, 4, 1, 3) and split.opacities.shape == (6, 4)
    assert torch.equal(split.means[4], means[1, 2 + 4 : 2 + 2 * 4])  # sample 1, view 1: after its 2 tokens and view 0
    with pytest.raises(ValueError, match="own_view: 14 Gaussians cannot hold 4 views of 4 pixel Gaussians"):
        own_view_gaussians(g, views=4, pixels=4)


def test_the_computer_adds_the_weighted_term():
    gaussians, batch = scene([0.8, 0.3])
    computer = LossComputer(LossConfig(perceptual={"weight": 0.0}, l2={"weight": 0.0}, own_view={"weight": 2.0}))
    terms = computer(inputs_for(gaussians, batch, [1.0, 0.0]), step=0)
    assert torch.isclose(terms["own_view_loss"], torch.tensor(0.065), atol=1e-5)
    assert torch.isclose(terms["loss"], torch.tensor(0.13), atol=1e-5)
    assert "own_view" not in LossComputer(LossConfig(perceptual={"weight": 0.0})).terms  # off by default


def test_training_steps_with_the_term(rodent_root):
    """Through the LightningModule's step on the rodent data: the term finds the input views' pixel Gaussians after
    the model's tokens, at the loader's size, and is logged."""
    from test_module import TINY, fit

    from gslrm.lit.module import GSLRMModule
    from gslrm.lit.optim import OptimConfig

    loss = LossConfig(perceptual={"weight": 0.0}, own_view={"weight": 1.0})
    module = GSLRMModule(TINY, loss, OptimConfig(warmup_steps=2), num_input_views=4, val_lpips=False)
    trainer = fit(module, rodent_root, 2)
    assert 0.0 < float(trainer.callback_metrics["train/own_view_loss"]) < 1.0
