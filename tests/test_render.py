import math
from pathlib import Path

import numpy as np
import pytest
import torch
import warm_python

from gslrm.cameras import turntable_cameras
from gslrm.model.gaussians import SH_C0, Gaussians
from gslrm.render import render
from gslrm.render.compiled import intersect_tiles, rasterize_compiled
from gslrm.render.oracle import rasterize_dense
from gslrm.render.projection import project
from gslrm.render.tiles import blend, intersections, rasterize_tiles

RASTERIZERS = {"torch": rasterize_tiles, "compiled": rasterize_compiled}


def one_gaussian(x, y, z, scale, opacity, rgb, dtype=torch.float32):
    features = ((torch.tensor(rgb, dtype=dtype) - 0.5) / SH_C0).view(1, 1, 1, 3)
    return Gaussians(
        means=torch.tensor([[[x, y, z]]], dtype=dtype),
        features=features,
        scales=torch.full((1, 1, 3), scale, dtype=dtype),
        quats=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=dtype),
        opacities=torch.tensor([[opacity]], dtype=dtype),
    )


def test_one_isotropic_gaussian_known_answer():
    """Camera at the origin looking +z, fx = fy = 100, cx = cy = 16: a Gaussian at (0.11, -0.05, 2) projects to
    (100*0.11/2 + 16, 100*-0.05/2 + 16) = (21.5, 13.5), the centre of pixel (row 13, col 21)."""
    g = one_gaussian(0.11, -0.05, 2.0, scale=0.05, opacity=0.8, rgb=[0.2, 0.4, 0.6])
    c2w, k = torch.eye(4)[None, None], torch.tensor([[[100.0, 100.0, 16.0, 16.0]]])
    out = render(g, c2w, k, 32, 32)
    assert out.rgb.shape == (1, 1, 3, 32, 32) and out.depth.shape == out.alpha.shape == (1, 1, 1, 32, 32)
    centre = (0, 0, slice(None), 13, 21)
    assert torch.allclose(out.alpha[centre], torch.tensor([0.8]), atol=1e-6)
    assert torch.allclose(out.rgb[centre], 0.8 * torch.tensor([0.2, 0.4, 0.6]) + 0.2, atol=1e-6)
    assert torch.allclose(out.depth[centre], torch.tensor([2.0]), atol=1e-6)
    assert out.alpha[0, 0, 0].argmax().item() == 13 * 32 + 21
    # one pixel to the right: EWA covariance s^2 J J^T + 0.3 I with J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]
    jac = np.array([[50.0, 0.0, -100 * 0.11 / 4], [0.0, 50.0, 100 * 0.05 / 4]])
    cov = 0.05**2 * jac @ jac.T + 0.3 * np.eye(2)
    conic = np.linalg.inv(cov)
    expected_alpha = 0.8 * math.exp(-0.5 * conic[0, 0])
    assert abs(out.alpha[0, 0, 0, 13, 22].item() - expected_alpha) < 1e-5
    # far away: white background, nothing hit
    assert torch.allclose(out.rgb[0, 0, :, 0, 0], torch.ones(3)) and out.alpha[0, 0, 0, 0, 0] == 0


def test_blend_matches_the_sequential_rule():
    """gsplat's loop: skip alpha < 1/255, stop (exclusive) when T would drop to <= 1e-4, alpha <= max_alpha."""
    alphas = [0.9, 0.002, 0.99, 0.95, 0.5]  # T: 0.1, (skip), 0.001, 5e-5 -> stop before the 4th
    opacities = torch.tensor(alphas).view(1, 5)
    features = torch.arange(5, dtype=torch.float32).view(1, 5, 1) + 1
    means2d, xs, ys = torch.zeros(1, 5, 2), torch.zeros(1, 1), torch.zeros(1, 1)  # all centred on the one pixel
    acc, final = blend(
        means2d, torch.ones(1, 5, 3), opacities, features, xs, ys, torch.ones(1, 5, dtype=torch.bool), 0.999
    )
    t, expected = 1.0, 0.0
    for alpha, value in zip(alphas, [1, 2, 3, 4, 5], strict=True):
        if alpha < 1 / 255:
            continue
        if t * (1 - alpha) <= 1e-4:
            break
        expected += alpha * t * value
        t *= 1 - alpha
    assert abs(acc.item() - expected) < 1e-6 and abs(final.item() - t) < 1e-8
    assert abs(final.item() - 0.1 * 0.01) < 1e-8


def random_scene(n, batch=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=((torch.rand(batch, n, 3, generator=g) * 2 - 1) * 0.7).to(dtype),
        features=torch.randn(batch, n, 1, 3, generator=g).to(dtype),
        scales=torch.exp(torch.empty(batch, n, 3).uniform_(-4.5, -2.5, generator=g)).to(dtype),
        quats=torch.nn.functional.normalize(torch.randn(batch, n, 4, generator=g), dim=-1).to(dtype),
        opacities=torch.rand(batch, n, generator=g).to(dtype),
    )


def cameras(batch, views, size, dtype=torch.float32):
    c2w, k = turntable_cameras(views, size, elevation_deg=25.0, dtype=dtype)
    return c2w.expand(batch, -1, -1, -1).clone(), k.expand(batch, -1, -1).clone()


@pytest.mark.parametrize("backend", RASTERIZERS)
@pytest.mark.parametrize("tile_size", [8, 16])
def test_tiled_equals_dense_oracle(tile_size, backend):
    g = random_scene(600, batch=2)
    c2w, k = cameras(2, 2, 40)  # 40 is not a multiple of the tile size: edge tiles are cropped
    splats = project(g, c2w, k, 40, 40)
    background = torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(4, 4)
    options = {"chunk_elements": 1 << 14} if backend == "torch" else {}
    tiled, tiled_alpha = RASTERIZERS[backend](splats, 40, 40, background, tile_size=tile_size, **options)
    dense, dense_alpha = rasterize_dense(splats, 40, 40, background)
    assert (tiled - dense).abs().max() <= 1e-5 and (tiled_alpha - dense_alpha).abs().max() <= 1e-5
    assert 0.2 < dense_alpha.mean() < 0.99  # a non-trivial scene


@pytest.mark.parametrize("backend", RASTERIZERS)
def test_tiled_gradients_equal_dense_oracle(backend):
    g = random_scene(200)
    leaves = [t.requires_grad_(True) for t in (g.means, g.features, g.scales, g.opacities)]
    c2w, k = cameras(1, 2, 24)
    background = torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(2, 4)
    weights = torch.randn(2, 24, 24, 4)
    grads = []
    for rasterize in (RASTERIZERS[backend], rasterize_dense):
        splats = project(g, c2w, k, 24, 24)
        colors, alphas = rasterize(splats, 24, 24, background)
        grads.append(torch.autograd.grad((colors * weights).sum() + alphas.sum(), leaves))
    for tiled, dense in zip(*grads, strict=True):
        assert (tiled - dense).abs().max() <= 1e-5 * max(1.0, dense.abs().max().item())


@pytest.mark.parametrize("backend", RASTERIZERS)
def test_gradients_match_finite_differences(backend):
    g = random_scene(6, dtype=torch.float64)
    g.scales = g.scales * 4  # a few large Gaussians covering many pixels
    c2w, k = cameras(1, 1, 12, dtype=torch.float64)

    def image(means, features, opacities):
        scene = Gaussians(means, features, g.scales, g.quats, opacities)
        out = render(scene, c2w, k, 12, 12)
        return torch.cat([out.rgb, out.alpha], dim=2)

    inputs = (
        g.means.clone().requires_grad_(),
        g.features.clone().requires_grad_(),
        g.opacities.clone().requires_grad_(),
    )
    # render() computes in fp32 like gsplat; check the float64 path of the rasterizer directly
    from gslrm.render import render_views

    def image64(means, features, opacities):
        scene = Gaussians(means, features, g.scales, g.quats, opacities)
        splats = project(scene, c2w, k, 12, 12)
        background = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
        colors, alphas = RASTERIZERS[backend](splats, 12, 12, background)
        return torch.cat([colors, alphas], dim=-1)

    assert torch.autograd.gradcheck(image64, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    assert image(*inputs).shape == (1, 1, 4, 12, 12) and render_views is not None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_equals_torch_tiled_path(dtype):
    """The compiled rasterizer against the torch reference on a dense scene with opaque, overlapping splats (pixels
    that stop early, clamped alphas): values and every gradient, and the same tile lists."""
    g = random_scene(3000, batch=2, dtype=dtype)
    g.opacities = 0.5 + 0.5 * g.opacities  # up to 1: exercises the 0.999 clamp and the transmittance stop
    leaves = [t.requires_grad_(True) for t in (g.means, g.features, g.scales, g.quats, g.opacities)]
    c2w, k = cameras(2, 2, 36, dtype=dtype)
    background = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=dtype).expand(4, 4)
    weights = torch.randn(4, 36, 36, 5, dtype=dtype)
    outputs, grads = [], []
    for rasterize in (rasterize_tiles, rasterize_compiled):
        splats = project(g, c2w, k, 36, 36)
        colors, alphas = rasterize(splats, 36, 36, background)
        stacked = torch.cat([colors, alphas], dim=-1)
        outputs.append(stacked.detach())
        grads.append(torch.autograd.grad((stacked * weights).sum(), leaves))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert (outputs[0] - outputs[1]).abs().max() <= tolerance
    assert (outputs[0][..., 4] > 0.99).float().mean() > 0.2  # many pixels saturate
    for reference, compiled in zip(*grads, strict=True):
        assert (reference - compiled).abs().max() <= tolerance * max(1.0, reference.abs().max().item())
    splats = project(g, c2w, k, 36, 36)
    reference_ids, reference_counts, _ = intersections(splats, 8, 5, 5)
    ids, starts, counts = intersect_tiles(splats, 8, 5, 5)
    assert torch.equal(ids, reference_ids) and torch.equal(counts, reference_counts)
    assert torch.equal(starts, torch.cumsum(counts, 0) - counts)


def test_compiled_rasterizer_uses_every_thread_count_alike():
    """Per-pair gradient slots summed in a fixed order: 1 thread and 2 threads give identical bits. The splats are
    projected once, outside the comparison: torch's own projection is not bit-stable across thread counts on every
    CPU (measured on an AMD EPYC: means2d differ by 4e-6 between 1 and 2 threads)."""
    from dataclasses import replace

    projected = project(random_scene(2000, batch=1), *cameras(1, 3, 32), 32, 32)
    differentiable = ("means2d", "conics", "features", "opacities")  # what the rasterizer's backward reaches
    background = torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(3, 4)
    results, threads = [], torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            leaves = {name: getattr(projected, name).detach().clone().requires_grad_(True) for name in differentiable}
            colors, alphas = rasterize_compiled(replace(projected, **leaves), 32, 32, background)
            weights = torch.linspace(0.5, 1.5, colors.numel()).reshape(colors.shape)  # every channel its own weight
            results.append(
                (colors.detach(), *torch.autograd.grad((colors * weights).sum() + alphas.sum(), list(leaves.values())))
            )
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deferred_backprop_equals_plain_gradients(dtype):
    g = random_scene(300, batch=2, dtype=dtype)
    leaves = [t.requires_grad_(True) for t in (g.means, g.features, g.scales, g.quats, g.opacities)]
    c2w, k = cameras(2, 3, 24, dtype=dtype)
    background = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=dtype)
    weights = torch.randn(2, 3, 5, 24, 24, dtype=dtype)
    grads, images = [], []
    for deferred in (False, True):
        out = render(g, c2w, k, 24, 24, background=background, deferred=deferred)
        stacked = torch.cat([out.rgb, out.depth, out.alpha], dim=2)
        images.append(stacked.detach())
        grads.append(torch.autograd.grad((stacked * weights).sum(), leaves))
    assert torch.equal(images[0], images[1])
    # fp64: equal to 1e-5 absolute; fp32: only summation order differs (expected depth divides by small alphas)
    tolerance = 1e-5 if dtype == torch.float64 else 5e-4
    for plain, deferred in zip(*grads, strict=True):
        scale = 1.0 if dtype == torch.float64 else max(1.0, plain.abs().max().item())
        assert (plain - deferred).abs().max() <= tolerance * scale


def test_expected_depth_of_two_layers():
    near = one_gaussian(0.0, 0.0, 2.0, 0.05, 0.5, [1, 0, 0])
    far = one_gaussian(0.0, 0.0, 3.0, 0.05, 0.5, [0, 0, 1])
    g = Gaussians(
        *(
            torch.cat([getattr(near, f), getattr(far, f)], 1)
            for f in ["means", "features", "scales", "quats", "opacities"]
        )
    )
    out = render(g, torch.eye(4)[None, None], torch.tensor([[[100.0, 100.0, 8.5, 8.5]]]), 16, 16)
    # centre pixel (8, 8) is 0.5 px off both centres: weights 0.5 a, 0.5 (1 - 0.5 a) b with a = b = alpha(0.5 px)
    a = out.alpha[0, 0, 0, 8, 8].item()
    w1 = 1 - math.sqrt(1 - a)  # both splats have (nearly) the same footprint
    w2 = (1 - w1) * w1
    assert abs(out.depth[0, 0, 0, 8, 8].item() - (2 * w1 + 3 * w2) / (w1 + w2)) < 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's rasterizer)")
def test_cpu_rasterizer_matches_gsplat_cuda():
    g = random_scene(2000, batch=2)
    c2w, k = cameras(2, 3, 64)
    cpu = render(g, c2w, k, 64, 64)
    cuda = render(g.map(lambda t: t.cuda()), c2w.cuda(), k.cuda(), 64, 64)
    for field in ["rgb", "alpha", "depth"]:
        assert (getattr(cpu, field) - getattr(cuda, field).cpu()).abs().max() < 1e-3, field


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_without_a_compiler_render_falls_back_to_torch_with_one_warning(tmp_path):
    """No C++ compiler and nothing cached: `auto` renders with the torch path (same image) and warns once;
    `compiled` fails in one line with the reason."""
    import os

    script = """
import logging, torch
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from gslrm.render import RenderConfig, render
from gslrm.render.compiled import available
from tests.test_render import cameras, random_scene
g = random_scene(300)
c2w, k = cameras(1, 2, 24)
auto = [render(g, c2w, k, 24, 24).rgb for _ in range(2)]
torch_path = render(g, c2w, k, 24, 24, settings=RenderConfig(cpu_backend="torch")).rgb
print("AVAILABLE", available(), "EQUAL", torch.equal(auto[0], torch_path))
try:
    render(g, c2w, k, 24, 24, settings=RenderConfig(cpu_backend="compiled"))
except RuntimeError as error:
    print("ERROR", error)
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "GSLRM_EXT_DIR": str(tmp_path / "ext")}
    done = warm_python.run(["-c", script], env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "AVAILABLE False EQUAL True" in done.stdout
    assert done.stderr.count("compiled CPU rasterizer unavailable") == 1
    assert "ERROR render.cpu_backend=compiled, but the compiled rasterizer is unavailable" in done.stdout
    assert "no-such-compiler" in done.stdout or "compiler" in done.stdout


def test_render_config_rejects_an_unknown_cpu_backend():
    from conftest import composition_error

    from gslrm.config import coerce
    from gslrm.render import RenderConfig

    message = composition_error("config", "render.cpu_backend=numba")
    assert "render.cpu_backend=numba" in message and "expected one of [auto, compiled, torch]" in message
    with pytest.raises(ValueError, match=r"^render.cpu_backend: Invalid value 'numba', expected one of \[auto, "):
        coerce(RenderConfig, {"cpu_backend": "numba"}, "render")  # as a checkpoint's stored config is read


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_no_gaussians_render_the_background(backend):
    """An export filter can keep no Gaussian at all (eval.min_opacity above every opacity): the background, alpha 0,
    depth 0 (the compiled rasterizer crashed on it)."""
    from gslrm.render import RenderConfig

    empty = Gaussians(
        torch.zeros(2, 0, 3), torch.zeros(2, 0, 1, 3), torch.zeros(2, 0, 3), torch.zeros(2, 0, 4), torch.zeros(2, 0)
    )
    c2w, k = cameras(2, 3, 16)
    background = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
    out = render(empty, c2w, k, 16, 16, background=background, settings=RenderConfig(cpu_backend=backend))
    assert torch.equal(out.rgb, background[:, None, :, None, None].expand(2, 3, 3, 16, 16))
    assert not out.alpha.any() and not out.depth.any()
