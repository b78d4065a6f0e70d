"""loss.mask_distance: the distance field by hand and against brute force, the term's known answers, and the pull it
gives a Gaussian outside the silhouette (towards it, along its own ray: its depth), where the coverage term gives none."""

import math

import numpy as np
import pytest
import torch
from test_losses import make_inputs
from test_render import one_gaussian

from gslrm.losses.alpha import alpha_loss
from gslrm.losses.computer import LossComputer, LossConfig
from gslrm.losses.mask_distance import MaskDistanceConfig, MaskDistanceLoss, distance_to_mask, mask_distance_loss
from gslrm.render import render


def test_distance_field_by_hand():
    mask = torch.zeros(5, 5)
    mask[2, 2] = 0.3  # any coverage counts: a thin part's pixels are fractional at 64 px
    r2, r5, r8 = math.sqrt(2), math.sqrt(5), math.sqrt(8)
    expected = torch.tensor(
        [
            [r8, r5, 2, r5, r8],
            [r5, r2, 1, r2, r5],
            [2, 1, 0, 1, 2],
            [r5, r2, 1, r2, r5],
            [r8, r5, 2, r5, r8],
        ]
    )
    assert torch.allclose(distance_to_mask(mask, 3), expected)
    capped = distance_to_mask(mask, 2)  # nothing beyond the cap
    assert torch.allclose(capped, expected.clamp_max(2))
    assert torch.equal(distance_to_mask(torch.zeros(2, 1, 4, 6), 5), torch.full((2, 1, 4, 6), 5.0))  # empty view


def test_distance_field_equals_brute_force():
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(3, 2, 30, 41, generator=generator) > 0.994).float()
    mask[0, 0] = 0  # a view with no animal
    distance = distance_to_mask(mask, 7).numpy()
    rows, cols = np.meshgrid(np.arange(30), np.arange(41), indexing="ij")
    for index in np.ndindex(3, 2):
        expected = np.full((30, 41), 7.0)
        for row, col in np.argwhere(mask[index].numpy() > 0):
            expected = np.minimum(expected, np.hypot(rows - row, cols - col))
        assert np.abs(distance[index] - expected).max() < 1e-5, index


def test_term_known_answers():
    # one row of 5 pixels, the animal in the first: distances 0 1 2 3 4, alpha 0.5 everywhere, cap 4
    target = torch.tensor([1.0, 0, 0, 0, 0]).view(1, 1, 1, 1, 5)
    rendered = torch.full_like(target, 0.5)
    assert mask_distance_loss(rendered, target, 4).item() == pytest.approx(0.5 * (0 + 1 + 2 + 3 + 4) / 5 / 4)
    # cap 2: 0 1 2 2 2
    assert mask_distance_loss(rendered, target, 2).item() == pytest.approx(0.5 * (0 + 1 + 2 + 2 + 2) / 5 / 2)
    # the image's edge is empty space, not animal: a mask-less view costs its whole alpha
    assert mask_distance_loss(rendered, torch.zeros_like(target), 4).item() == pytest.approx(0.5)
    # alpha on the animal is free
    assert mask_distance_loss(target, target, 4).item() == 0.0


def _through_the_ray(t: float, max_px: int = 16):
    """A Gaussian on camera A's ray through P = (0, 0, 2), at distance t from A = (2, 0, 2) (t = 2 is P), rendered
    in camera B (the origin looking +z, fx 100, 32 px) where the true mask is a 5x5 square around P's projection
    (column and row 16). Returns the gradients of mask_distance and of the l2 coverage term on t."""
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    gaussian = one_gaussian(0.0, 0.0, 2.0, scale=0.03, opacity=0.8, rgb=[0.5, 0.5, 0.5], dtype=torch.float64)
    gaussian.means = torch.stack([2.0 - t, torch.zeros_like(t), torch.full_like(t, 2.0)]).view(1, 1, 3)
    c2w = torch.eye(4, dtype=torch.float64)[None, None]
    k = torch.tensor([[[100.0, 100.0, 16.0, 16.0]]], dtype=torch.float64)
    alpha = render(gaussian, c2w, k, 32, 32).alpha
    target = torch.zeros_like(alpha)
    target[..., 14:19, 14:19] = 1.0
    (pull,) = torch.autograd.grad(mask_distance_loss(alpha, target, max_px), t, retain_graph=True)
    (coverage,) = torch.autograd.grad(alpha_loss(alpha, target, "l2"), t)
    return pull.item(), coverage.item()


@pytest.mark.parametrize(("t", "towards"), [(1.8, +1), (2.2, -1)])
def test_the_term_pulls_a_gaussian_towards_the_silhouette_along_its_ray(t, towards):
    """At t = 1.8 the Gaussian projects 10 px right of P's column (7 px from the square at 1.5 px of footprint), at
    2.2 as far left: the term's gradient moves t towards 2 (its depth towards the true one), the coverage term's
    hardly at all (only fading pays there)."""
    pull, coverage = _through_the_ray(t)
    assert -towards * pull > 1e-3  # descending the gradient moves t towards 2
    assert abs(coverage) < 0.02 * abs(pull)  # the footprint's far tail: 0.6 % of the pull here


def test_config_and_computer():
    with pytest.raises(ValueError, match="loss.mask_distance.max_px"):
        MaskDistanceConfig(weight=1.0, max_px=0)
    with pytest.raises(ValueError, match="needs the rendered alpha"):
        MaskDistanceLoss(MaskDistanceConfig(weight=1.0))(
            make_inputs(torch.ones(1, 1, 3, 4, 4), torch.ones(1, 1, 3, 4, 4))
        )
    computer = LossComputer(LossConfig(perceptual={"weight": 0.0}, mask_distance={"weight": 2.0, "max_px": 4}))
    assert set(computer.terms) == {"l2", "mask_distance"}
    mask = torch.zeros(1, 1, 1, 1, 5)
    mask[..., 0] = 1.0
    inputs = make_inputs(torch.ones(1, 1, 3, 1, 5), torch.ones(1, 1, 3, 1, 5), mask=mask)
    inputs.alpha = torch.full((1, 1, 1, 1, 5), 0.5)
    out = computer(inputs, step=0)
    assert out["mask_distance_loss"].item() == pytest.approx(0.25)
    assert out["loss"].item() == pytest.approx(0.0 + 2.0 * 0.25)
