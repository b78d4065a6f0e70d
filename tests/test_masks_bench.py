"""python -m gslrm.bench.masks: a checkpoint's novel views with its input masks a few pixels off."""

import pytest
import torch

from gslrm.bench.masks import score
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.losses.metrics import opacity_iou
from gslrm.model.gslrm import GSLRM, ModelConfig
from gslrm.model.hull import grow_masks, jitter_masks
from gslrm.predict import predict_and_render
from gslrm.render import RenderConfig
from gslrm.rig import NormalizationConfig


def test_grow_and_shrink_known_answers():
    """One pixel grows to its 3x3 block, twice to 5x5; a 3x3 block shrinks to its centre; a line one pixel wide
    vanishes when shrunk (a tail a pixel off is no tail)."""
    dot = torch.zeros(1, 9, 9)
    dot[0, 4, 4] = 1.0
    assert grow_masks(dot, 1).sum() == 9 and grow_masks(dot, 1)[0, 3:6, 3:6].eq(1).all()
    assert grow_masks(dot, 2).sum() == 25
    block = grow_masks(dot, 1)
    assert torch.equal(grow_masks(block, -1), dot)
    line = torch.zeros(1, 9, 9)
    line[0, 4, 1:8] = 1.0
    assert grow_masks(line, -1).sum() == 0
    assert torch.equal(grow_masks(line, 0), line)


def test_jitter_changes_whole_views_at_its_rate():
    """hull_mask_noise: each view is left alone, grown or shrunk, whole, with chances 1 - p, p/2, p/2."""
    torch.manual_seed(0)
    alpha = torch.zeros(50, 8, 9, 9)
    alpha[..., 3:6, 3:6] = 1.0
    jittered = jitter_masks(alpha, 0.5)
    counts = jittered.sum(dim=(-1, -2)).flatten()
    assert set(counts.tolist()) <= {1.0, 9.0, 25.0}
    shares = [float((counts == c).float().mean()) for c in (9.0, 25.0, 1.0)]
    assert shares == pytest.approx([0.5, 0.25, 0.25], abs=0.06)
    assert torch.equal(jitter_masks(alpha, 0.0), alpha)


def dataset(rodent_root):
    config = DataConfig(
        root=str(rodent_root), image_size=32, recenter=True, normalization=NormalizationConfig(up=(0.0, 0.0, 1.0))
    )
    return ViewDataset(config, "val")


def test_a_model_that_does_not_read_masks_scores_the_same_at_every_offset(rodent_root):
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(dim=32, depth=1, head_dim=16, patch_size=4)).eval()
    data = dataset(rodent_root)
    exact = score(model, data, RenderConfig(), 0, samples=1)
    assert set(exact) == {"opacity_iou", "psnr_masked", "thin_recall"}
    assert score(model, data, RenderConfig(), 1, samples=1) == exact
    assert score(model, data, RenderConfig(), -1, samples=1) == exact


def test_a_hull_model_moves_with_its_masks(rodent_root):
    """model.hull_depth reads the masks: grown by two pixels, its Gaussians start on another hull and its figures
    change; exact, they are the figures of the model given the true masks."""
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(dim=32, depth=1, head_dim=16, patch_size=4, hull_depth=True, hull_samples=64)).eval()
    data = dataset(rodent_root)
    exact, grown = (score(model, data, RenderConfig(), pixels, samples=1) for pixels in (0, 2))
    assert exact != grown
    sample = {k: v[None] if isinstance(v, torch.Tensor) else v for k, v in data[0].items()}
    with torch.no_grad():
        _, rendered = predict_and_render(model, sample, 4, RenderConfig())
    truth = sample["image"][0, 4:, 3:4]
    assert exact["opacity_iou"] == pytest.approx(float(opacity_iou(rendered.alpha[0, 4:], truth)))
