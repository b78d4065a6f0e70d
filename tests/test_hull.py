"""model.hull_depth: the visual hull's entry along each input pixel's ray (gslrm.model.hull) and the model reading it."""

import pytest
import torch

from gslrm.cameras import pixel_rays, turntable_cameras
from gslrm.model.gslrm import GSLRM, ModelConfig, load_facelift_checkpoint
from gslrm.model.hull import hull_entry

SIZE, RADIUS, CAMERA_DISTANCE = 32, 0.5, 2.7  # turntable_cameras' default radius is FaceLift's 2.7


def sphere_views(views=4, size=SIZE, radius=RADIUS):
    """Exact masks of a sphere at the origin seen by a ring of cameras, and each pixel's true distance to it."""
    c2w, fxfycxcy = turntable_cameras(views, size, elevation_deg=20.0)
    ray_o, ray_d = pixel_rays(c2w, fxfycxcy, size, size)
    along = -(ray_o * ray_d).sum(dim=1)  # the ray's point nearest the centre
    miss2 = (ray_o + along[:, None] * ray_d).square().sum(dim=1)
    hit = miss2 < radius**2
    true = along - (radius**2 - miss2).clamp_min(0).sqrt()
    return c2w[None], fxfycxcy[None], ray_o[None], ray_d[None], hit[None].float(), true[None]


def test_entry_of_a_sphere_from_four_views_lies_on_its_hull():
    """Known answer: the hull of a sphere contains it, so the entry is not behind the true surface (by at most a
    pixel's footprint: the masks are whole pixels, and a grazing ray at the outline's edge is left out), and along a
    view's central ray, where the other cameras see the sphere's outline edge-on, the hull's front is the sphere's own
    (distance 2.7 - 0.5 = 2.2, less the perspective cones' widening: within 0.06)."""
    c2w, fxfycxcy, ray_o, ray_d, alpha, true = sphere_views()
    span, samples = 1.8, 361  # 0.01 apart
    entry, found = hull_entry(alpha, c2w, fxfycxcy, ray_o, ray_d, span, samples)
    foreground = alpha > 0.5
    assert found[foreground].float().mean() > 0.95
    assert not found[~foreground].any()
    t0 = -(ray_o * ray_d).sum(dim=2)
    assert torch.equal(entry[~foreground], t0[~foreground])  # background pixels keep t0
    inside = foreground & found
    interior = foreground & (torch.nn.functional.avg_pool2d(alpha[0][:, None], 3, 1, 1)[:, 0][None] > 0.99) & found
    footprint = true / fxfycxcy[..., 0, None, None]
    assert (entry[interior] <= true[interior] + footprint[interior]).all()
    centre = entry[0, :, SIZE // 2, SIZE // 2]
    assert torch.allclose(centre, torch.full_like(centre, CAMERA_DISTANCE - RADIUS), atol=0.06)
    # and over the whole silhouette the hull of 4 views is close to the sphere: median 2 % of the depth
    error = ((entry - true).abs() / true)[inside]
    assert error.median() < 0.02


def test_a_view_whose_mask_misses_the_part_leaves_no_entry():
    """A part that one camera's mask does not hold is outside the hull: those rays get no entry and keep t0."""
    c2w, fxfycxcy, ray_o, ray_d, alpha, _ = sphere_views()
    alpha[0, 2] = 0.0  # view 2 sees nothing
    entry, found = hull_entry(alpha, c2w, fxfycxcy, ray_o, ray_d, 1.8, 64)
    assert not found.any()
    assert torch.equal(entry, -(ray_o * ray_d).sum(dim=2))


def test_model_starts_each_foreground_pixel_at_the_hull_entry():
    """model.hull_depth: with the depth channels' read-out at zero, each pixel's Gaussian sits exactly at the hull's
    entry on its ray (t0 where there is none), and the patch embedding reads 2 more channels per pixel."""
    torch.manual_seed(0)
    config = ModelConfig(dim=64, depth=1, head_dim=32, patch_size=8, hull_depth=True, hull_samples=64)
    model = GSLRM(config)
    assert model.patch_embedder[1].in_features == (9 + 2) * 8 * 8
    c2w, fxfycxcy, ray_o, ray_d, alpha, _ = sphere_views(size=16)
    with torch.no_grad():
        model.pixel_gaussian_decoder[1].weight.zero_()  # raw 0: sigmoid 0.5, no offset from the start point
    image = torch.cat([torch.rand(1, 4, 3, 16, 16), alpha[:, :, None]], dim=2)
    out = model(image, c2w, fxfycxcy)
    entry, _ = hull_entry(alpha, c2w, fxfycxcy, ray_o, ray_d, config.depth_range, config.hull_samples)
    distance = ((out.pixel_means - out.ray_o) * out.ray_d).sum(dim=2)
    assert torch.allclose(distance, entry, atol=1e-5)
    with pytest.raises(ValueError, match="model.hull_depth needs the input views' masks"):
        model(image[:, :, :3], c2w, fxfycxcy)


def test_model_without_hull_ignores_the_alpha():
    """FaceLift's model reads RGB only: an RGBA input gives the same Gaussians as its RGB."""
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(dim=64, depth=1, head_dim=32))
    c2w, fxfycxcy, *_ = sphere_views(size=16)
    image = torch.rand(1, 4, 4, 16, 16)
    assert torch.equal(
        model(image, c2w, fxfycxcy).gaussians.means, model(image[:, :, :3], c2w, fxfycxcy).gaussians.means
    )


def test_loading_weights_across_hull_depth_names_the_setting(tmp_path):
    """A checkpoint trained without the hull (every one before it, rodent_long's) into the default model, which
    carves it: the error says which setting the checkpoint needs, and the other way round."""
    without, with_hull = (GSLRM(ModelConfig(dim=64, depth=1, head_dim=32, hull_depth=h)) for h in (False, True))
    for source, target, needed in ((without, with_hull, "false"), (with_hull, without, "true")):
        path = tmp_path / f"{needed}.pt"
        torch.save({"model": source.state_dict()}, path)
        with pytest.raises(ValueError, match=f"trained with model.hull_depth={needed}: set that"):
            load_facelift_checkpoint(target, path)
