"""python -m gslrm.bench.ceiling: the checkpoint's Gaussians against the true surface (rodent depth)."""

import pytest
import torch

from gslrm.bench.ceiling import VARIANTS, score, variants
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.model.gslrm import GSLRM, ModelConfig
from gslrm.render import RenderConfig
from gslrm.rig import NormalizationConfig

TINY = dict(dim=32, depth=1, head_dim=16, patch_size=4)


def val_dataset(rodent_root, load_depth=True):
    config = DataConfig(
        root=str(rodent_root),
        image_size=32,
        recenter=True,
        load_depth=load_depth,
        normalization=NormalizationConfig(up=(0.0, 0.0, 1.0)),
    )
    return ViewDataset(config, "val")


def test_true_depth_puts_foreground_gaussians_on_the_surface_and_leaves_the_rest(rodent_root):
    """Known answer: a foreground pixel's moved Gaussian, seen from its own camera, sits at that pixel's z-depth;
    the token Gaussians and the background pixels' keep the model's means."""
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**TINY)).eval()
    sample = {k: v[None] if isinstance(v, torch.Tensor) else v for k, v in val_dataset(rodent_root)[0].items()}
    with torch.no_grad():
        output = model(sample["image"][:, :4, :3], sample["c2w"][:, :4], sample["fxfycxcy"][:, :4])
    moved = variants(output, sample, 4, patch_size=4)
    assert set(moved) == set(VARIANTS)
    means, original = moved["model_true_depth"].means[0], output.gaussians.means[0]
    assert torch.equal(means[:2], original[:2])  # the free token Gaussians
    # pixel Gaussians of view 0 in the decoder's (patch row, patch col, row, col) order, back to image layout
    pixels = means[2 : 2 + 32 * 32].reshape(8, 8, 4, 4, 3).permute(0, 2, 1, 3, 4).reshape(32, 32, 3)
    kept = original[2 : 2 + 32 * 32].reshape(8, 8, 4, 4, 3).permute(0, 2, 1, 3, 4).reshape(32, 32, 3)
    depth = sample["depth"][0, 0, 0]
    foreground = depth > 0
    assert 20 < int(foreground.sum()) < 32 * 32 - 20
    w2c = torch.linalg.inv(sample["c2w"][0, 0])
    z = pixels @ w2c[:3, :3].T + w2c[:3, 3]
    assert torch.allclose(z[foreground][:, 2], depth[foreground], rtol=1e-4)
    assert torch.equal(pixels[~foreground], kept[~foreground])
    # the surface splats: opaque exactly on the foreground, off elsewhere and for the tokens
    opacity = moved["surface_opaque"].opacities[0]
    assert opacity[:2].sum() == 0 and opacity.sum() == int((sample["depth"][0, :4] > 0).sum())


def test_scores_the_true_surface_whatever_the_model(rodent_root):
    """The surface variants do not depend on the network: two random models score them the same; the true surface
    covers its own input views' silhouettes (recall), unlike an untrained model's fog."""
    dataset = val_dataset(rodent_root)
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        results.append(score(GSLRM(ModelConfig(**TINY)).eval(), dataset, RenderConfig(), samples=1))
    for name in ("surface_opaque", "surface_alpha"):
        assert results[0][name] == results[1][name]
    surface = results[0]["surface_opaque"]
    assert surface.recall_novel > 0.9 and surface.iou_input > 0.5 and surface.iou_novel > 0.3
    assert 0.0 <= results[0]["model"].iou_novel < surface.iou_novel
    # the thin column, by hand: the true surface's novel views against the thin parts of their masks
    from gslrm.losses.metrics import thin_parts
    from gslrm.render import render

    torch.manual_seed(0)
    sample = {k: v[None] if isinstance(v, torch.Tensor) else v for k, v in dataset[0].items()}
    with torch.no_grad():
        output = GSLRM(ModelConfig(**TINY)).eval()(
            sample["image"][:, :4, :3], sample["c2w"][:, :4], sample["fxfycxcy"][:, :4]
        )
        gaussians = variants(output, sample, 4, TINY["patch_size"])["surface_opaque"]
        alpha = render(gaussians, sample["c2w"][:, 4:], sample["fxfycxcy"][:, 4:], 32, 32).alpha[0] > 0.5
    thin = thin_parts(sample["image"][0, 4:, 3:4])
    assert thin.sum() > 0 and surface.thin_recall_novel == pytest.approx(float((alpha & thin).sum() / thin.sum()))


def test_needs_depth(rodent_root):
    with pytest.raises(ValueError, match="has no depth"):
        score(GSLRM(ModelConfig(**TINY)).eval(), val_dataset(rodent_root, load_depth=False), RenderConfig(), 1)


def test_input_view_coverage_own_gaussians_draw_no_more_than_all(rodent_root):
    """Adding Gaussians only adds alpha, so a view's own Gaussians cover at most what all of them cover; and the
    ``own`` row is each input view rendered from its own pixel Gaussians (checked against rendering them by hand)."""
    from dataclasses import replace

    from gslrm.bench.ceiling import input_view_coverage
    from gslrm.render import render

    torch.manual_seed(0)
    network, dataset = GSLRM(ModelConfig(**TINY)).eval(), val_dataset(rodent_root, load_depth=False)

    def model(
        image, c2w, fxfycxcy, clip_xyz=None
    ):  # small Gaussians of random opacity: partial, overlapping silhouettes
        output = network(image, c2w, fxfycxcy)
        g = output.gaussians
        g = replace(g, scales=torch.full_like(g.scales, 0.01), opacities=torch.rand(g.opacities.shape))
        return replace(output, gaussians=g)

    model.config = network.config  # what the tool's predict_gaussians reads (model.hull_depth)
    torch.manual_seed(1)
    coverage = input_view_coverage(model, dataset, RenderConfig(), samples=1)
    assert set(coverage) == {"own", "all"}
    assert 0.5 < coverage["own"].recall < coverage["all"].recall  # the other views' Gaussians fill in
    torch.manual_seed(1)
    sample = {k: v[None] if isinstance(v, torch.Tensor) else v for k, v in dataset[0].items()}
    with torch.no_grad():
        output = model(sample["image"][:, :4, :3], sample["c2w"][:, :4], sample["fxfycxcy"][:, :4])
        pixels = output.gaussians.map(lambda t: t[:, 2:])  # the 2 free token Gaussians first
        drawn = animal = both = 0
        for view in range(4):
            own = pixels.map(lambda t, v=view: t[:, v * 32 * 32 : (v + 1) * 32 * 32])
            c2w, k = sample["c2w"][:, view : view + 1], sample["fxfycxcy"][:, view : view + 1]
            alpha = render(own, c2w, k, 32, 32).alpha[0, 0, 0] > 0.5
            mask = sample["image"][0, view, 3] > 0.5
            drawn, animal, both = drawn + alpha.sum(), animal + mask.sum(), both + (alpha & mask).sum()
    assert coverage["own"].recall == pytest.approx(float(both / animal))
    assert coverage["own"].precision == pytest.approx(float(both / drawn))


def test_input_pixels_known_answer(rodent_root):
    """A model whose pixel Gaussians sit on the true surface (depth error 0) except 10 % too far on the thin parts,
    with opacity 0.9 in the image's left half and 0.1 in its right: the tool reads them back per pixel (the
    decoder's patch order undone), thin parts apart from the body."""
    from dataclasses import replace

    from gslrm.bench.ceiling import input_pixels
    from gslrm.cameras import pixel_rays
    from gslrm.losses.metrics import thin_parts
    from gslrm.model.hull import hull_entry

    torch.manual_seed(0)
    network, dataset = GSLRM(ModelConfig(**TINY)).eval(), val_dataset(rodent_root)
    sample = dataset[0]
    depth, alpha = sample["depth"][:4], sample["image"][:4, 3:4]
    thin = thin_parts(alpha) & (depth > 0)
    left = torch.zeros(4, 1, 32, 32)
    left[..., :16] = 1.0

    def model(image, c2w, fxfycxcy, clip_xyz=None):
        output = network(image, c2w, fxfycxcy)
        forward = c2w[:, :, :3, 2][..., None, None]
        z = depth[None] * (1 + 0.1 * thin[None])
        means = output.ray_o + z / (output.ray_d * forward).sum(dim=2, keepdim=True) * output.ray_d
        opacity = 0.1 + 0.8 * left[None, :, 0]  # image layout -> the decoder's (v, patch row, patch col, row, col)
        opacity = opacity.reshape(1, 4, 8, 4, 8, 4).permute(0, 1, 2, 4, 3, 5).reshape(1, -1)
        g = output.gaussians
        g = replace(g, opacities=torch.cat([g.opacities[:, :2], opacity], dim=1))
        return replace(output, gaussians=g, pixel_means=means)

    model.config = network.config
    facts = input_pixels(model, dataset, samples=1, patch_size=4)
    body = (alpha > 0.5) & ~thin & (depth > 0)
    for name, where in (("thin", thin), ("body", body)):
        f = facts[name]
        assert f.pixels == int(where.sum()) > 0
        expected_error = 0.1 if name == "thin" else 0.0
        assert f.depth_error_median == pytest.approx(expected_error, abs=1e-4)
        assert f.depth_error_mean == pytest.approx(expected_error, abs=1e-4)
        assert f.opaque_share == pytest.approx(float(left.bool()[where].float().mean()))
    # the hull's entry, computed here from the masks on its own: its z-depth against the truth where there is one
    c2w, fxfycxcy = sample["c2w"][None, :4], sample["fxfycxcy"][None, :4]
    ray_o, ray_d = pixel_rays(c2w, fxfycxcy, 32, 32)
    entry, found = hull_entry(alpha[None, :, 0], c2w, fxfycxcy, ray_o, ray_d, 1.8, 256)
    z = entry[0] * (ray_d[0] * c2w[0, :, :3, 2, None, None]).sum(dim=1)
    error = (z - depth[:, 0]).abs() / depth[:, 0].clamp_min(1e-6)
    for name, where in (("thin", thin[:, 0]), ("body", body[:, 0])):
        assert facts[name].hull_share == pytest.approx(float(found[0][where].float().mean()))
        assert facts[name].hull_error_median == pytest.approx(float(error[where & found[0]].median()), rel=1e-4)
