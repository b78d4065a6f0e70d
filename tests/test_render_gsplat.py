"""Our CUDA render path (``_render_gsplat``: the call into ``gsplat.rasterization``) run on CPU through gsplat's real
frontend, with its kernels replaced by CPU references (tests/gsplat_cpu.py). What this proves without a GPU: the
arguments we pass are the ones gsplat 1.5 expects (shapes, w2c viewmats, 3x3 Ks, SH layout and degree, per-(scene,
view) backgrounds, ``RGB+ED``), and what comes back (channels, expected depth, alpha) is laid out and normalised as
the CPU path's. What it cannot prove: that gsplat's CUDA kernels compute what their references do (``make test-gpu``).
"""

import multiprocessing
import time
import types
from pathlib import Path

import pytest
import torch
from gsplat_cpu import gsplat_on_cpu

import gslrm.render
from gslrm.cameras import turntable_cameras
from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig, _render_gsplat, render, render_views

LEAVES = ("means", "features", "scales", "quats", "opacities")
SIZE = 40  # not a multiple of gsplat's 16 px tiles: its edge tiles are cropped
BACKGROUNDS = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]])  # one per scene, as the trainer passes them


def scene_and_cameras(sh_degree: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch, n = 2, 250
    scene = Gaussians(
        means=(torch.rand(batch, n, 3, generator=g) * 2 - 1) * 0.6,
        features=torch.randn(batch, n, (sh_degree + 1) ** 2, 3, generator=g) * 0.5,
        scales=torch.exp(torch.empty(batch, n, 3).uniform_(-4.0, -2.5, generator=g)),
        quats=torch.nn.functional.normalize(torch.randn(batch, n, 4, generator=g), dim=-1),
        opacities=torch.rand(batch, n, generator=g),
    )
    c2w, k = turntable_cameras(3, SIZE, elevation_deg=25.0)
    return scene, c2w.expand(batch, -1, -1, -1).clone(), k.expand(batch, -1, -1).clone()


def with_grads(scene: Gaussians, draw):
    """Channels-last [rgb, depth, alpha] from ``draw`` and the gradients of a fixed random weighting of it."""
    leaves = [getattr(scene, name).detach().clone().requires_grad_(True) for name in LEAVES]
    out = draw(Gaussians(*leaves))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    return out.detach(), torch.autograd.grad((out * weights).sum(), leaves)


@pytest.mark.parametrize("sh_degree", [0, 1])
def test_the_gsplat_call_renders_what_the_cpu_path_renders(monkeypatch, sh_degree):
    scene, c2w, k = scene_and_cameras(sh_degree)
    backgrounds = BACKGROUNDS[:, None].expand(-1, 3, -1)
    settings = RenderConfig(cpu_backend="compiled")
    cpu, cpu_grads = with_grads(scene, lambda s: render_views(s, c2w, k, SIZE, SIZE, BACKGROUNDS, settings))
    with gsplat_on_cpu(monkeypatch):
        via_gsplat, gsplat_grads = with_grads(scene, lambda s: _render_gsplat(s, c2w, k, SIZE, SIZE, backgrounds))
    assert via_gsplat.shape == cpu.shape == (2, 3, SIZE, SIZE, 5)
    alpha = cpu[..., 4:]
    assert 0.2 < alpha.mean() < 0.95  # a scene with both covered and empty pixels
    rgb_alpha = [0, 1, 2, 4]
    assert (via_gsplat[..., rgb_alpha] - cpu[..., rgb_alpha]).abs().max() <= 1e-5
    covered = alpha[..., 0] > 1e-3  # expected depth divides by alpha; both give 0 where nothing was hit
    assert (via_gsplat[..., 3][covered] - cpu[..., 3][covered]).abs().max() <= 1e-4
    assert (via_gsplat[..., 3][alpha[..., 0] == 0] == 0).all() and (cpu[..., 3][alpha[..., 0] == 0] == 0).all()
    corner = via_gsplat[:, :, 0, 0]  # nothing is drawn in the top-left corner: each scene's own background
    assert torch.allclose(corner[..., :3], BACKGROUNDS[:, None].expand(-1, 3, -1)) and (corner[..., 4] == 0).all()
    for name, ours, theirs in zip(LEAVES, cpu_grads, gsplat_grads, strict=True):
        assert theirs.abs().max() > 0, name
        assert (ours - theirs).abs().max() <= 2e-4 * ours.abs().max(), f"d/d{name}"


def test_intersection_counts_are_the_tile_lists_gsplat_sorts(monkeypatch):
    """Per (scene, view): the pairs our count predicts = the length of the tile lists gsplat's own intersection
    (its PyTorch reference, here) builds from the same projection."""
    from gsplat.cuda import _torch_impl as reference

    from gslrm.cameras import intrinsics_matrix
    from gslrm.render import GSPLAT_TILE_SIZE, _gsplat_intersections

    scene, c2w, k = scene_and_cameras(0)
    viewmats, ks = torch.linalg.inv(c2w), intrinsics_matrix(k)
    with gsplat_on_cpu(monkeypatch):
        counts = _gsplat_intersections(scene, viewmats, ks, SIZE, SIZE)
        import gsplat.rendering

        radii, means2d, depths = gsplat.rendering.fully_fused_projection(
            scene.means, None, scene.quats, scene.scales, viewmats, ks, SIZE, SIZE
        )[:3]
    tiles = -(-SIZE // GSPLAT_TILE_SIZE)
    per_gaussian = reference._isect_tiles(means2d, radii, depths, GSPLAT_TILE_SIZE, tiles, tiles)[0]
    assert counts.dtype == torch.int64 and counts.shape == (2, 3)
    assert torch.equal(counts, per_gaussian.sum(dim=-1).to(torch.int64))
    assert counts.min() > 0


def test_views_are_grouped_under_the_intersection_limit():
    from gslrm.render import _view_groups

    assert _view_groups([3, 3, 3], 10) == [slice(0, 3)]
    assert _view_groups([4, 4, 4, 4], 8) == [slice(0, 2), slice(2, 4)]
    assert _view_groups([9, 2, 12, 1], 10) == [slice(0, 1), slice(1, 2), slice(2, 3), slice(3, 4)]


def test_a_call_over_the_intersection_limit_is_split_and_renders_the_same(monkeypatch):
    """gsplat fails inside a kernel past 2^31 (Gaussian, tile) pairs a call (seen on an H200): over the limit the call
    is split by scene and view, with the same images and gradients as one call. In float64: in float32 one scene
    drawn alone differs from it drawn in a batch by roundoff (2e-6), the references' batched sums."""
    import gsplat

    scene, c2w, k = scene_and_cameras(1)
    scene, c2w, k = scene.map(lambda t: t.double()), c2w.double(), k.double()
    backgrounds = BACKGROUNDS[:, None].expand(-1, 3, -1).double()
    with gsplat_on_cpu(monkeypatch):
        whole, whole_grads = with_grads(scene, lambda s: _render_gsplat(s, c2w, k, SIZE, SIZE, backgrounds))
        calls = []
        real = gsplat.rasterization
        monkeypatch.setattr(gsplat, "rasterization", lambda **kw: calls.append(kw["viewmats"].shape[:2]) or real(**kw))
        from gslrm.cameras import intrinsics_matrix
        from gslrm.render import _gsplat_intersections

        counts = _gsplat_intersections(scene, torch.linalg.inv(c2w), intrinsics_matrix(k), SIZE, SIZE)
        limit = int(counts[0, :2].sum())  # scene 0's first two views fit; no scene fits whole
        assert limit < counts[0].sum() and limit < counts[1].sum()
        monkeypatch.setattr(gslrm.render, "GSPLAT_MAX_INTERSECTIONS", limit)
        split, split_grads = with_grads(scene, lambda s: _render_gsplat(s, c2w, k, SIZE, SIZE, backgrounds))
    assert len(calls) >= 4 and all(scenes == 1 for scenes, _ in calls) and sum(v for _, v in calls) == 2 * 3
    assert calls[0] == (1, 2)  # views grouped up to the limit, not one call each
    assert (split - whole).abs().max() <= 1e-12
    for name, a, b in zip(LEAVES, whole_grads, split_grads, strict=True):
        assert (a - b).abs().max() <= 1e-12 * a.abs().max(), name


def test_deferred_rendering_through_the_gsplat_call_equals_the_plain_call(monkeypatch):
    """On CUDA the deferred backward re-renders one (scene, view) at a time through gsplat: slicing a batch's
    cameras, intrinsics and backgrounds that way must give the plain call's gradients. In float64: in float32 the
    two differ by roundoff alone that some thin Gaussians amplify (measured: up to 1.1e-4 of the largest quats
    gradient, 4e-5 in norm, on an AMD EPYC; 1e-12 in float64), which a tolerance would have to be tuned to per CPU."""
    scene, c2w, k = scene_and_cameras(sh_degree=1, seed=1)
    scene = Gaussians(*[getattr(scene, name).double() for name in LEAVES])
    c2w, k, backgrounds = c2w.double(), k.double(), BACKGROUNDS.double()
    monkeypatch.setattr(
        gslrm.render, "_render_cpu", lambda g, c2w, k, w, h, bg, settings: _render_gsplat(g, c2w, k, w, h, bg)
    )
    outputs = {}
    with gsplat_on_cpu(monkeypatch):
        for deferred in (False, True):

            def draw(s, deferred=deferred):
                out = render(s, c2w, k, SIZE, SIZE, background=backgrounds, deferred=deferred)
                return torch.cat([out.rgb, out.depth, out.alpha], dim=2)

            outputs[deferred] = with_grads(scene, draw)
    (plain, plain_grads), (deferred, deferred_grads) = outputs[False], outputs[True]
    assert torch.equal(plain, deferred)
    for name, a, b in zip(LEAVES, plain_grads, deferred_grads, strict=True):
        assert (a - b).abs().max() <= 1e-9 * max(a.abs().max().item(), 1.0), name


def test_kernels_missing_without_nvcc_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    from gslrm.render import gsplat_kernels

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(
        gsplat_kernels, "_load_backend", lambda: types.SimpleNamespace(_C=None)
    )  # gsplat's no-nvcc state
    gsplat_kernels.ensure_kernels.cache_clear()
    with pytest.raises(gsplat_kernels.GsplatKernelsUnavailable) as error:
        gsplat_kernels.ensure_kernels()
    message = str(error.value)
    assert "\n" not in message and "nvcc" in message and "python -m gslrm.render.gsplat_kernels" in message
    assert f"torch's CUDA {torch.version.cuda or 'none'}" in message


def test_a_failed_kernel_build_is_one_line_with_the_compilers_first_error(monkeypatch, tmp_path):
    """The shape of torch's error when ninja fails (seen here: a toolkit whose headers are not under CUDA_HOME)."""
    from gslrm.render import gsplat_kernels

    def failing_build():
        raise RuntimeError(
            "Error building extension 'gsplat_cuda': [1/30] /usr/local/bin/nvcc ... -c AdamCUDA.cu\n"
            "FAILED: Rasterization.o\nc++ -MMD ... -c Rasterization.cpp -o Rasterization.o\n"
            "In file included from .../c10/cuda/CUDAException.h:6,\n"
            ".../c10/cuda/CUDAMiscFunctions.h:7:10: fatal error: cuda_runtime.h: No such file or directory\n"
            "compilation terminated.\nninja: build stopped: subcommand failed."
        )

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setattr(gsplat_kernels, "_load_backend", failing_build)
    gsplat_kernels.ensure_kernels.cache_clear()
    with pytest.raises(gsplat_kernels.GsplatKernelsUnavailable) as error:
        gsplat_kernels.ensure_kernels()
    message = str(error.value)
    assert "\n" not in message and "RuntimeError: Error building extension 'gsplat_cuda'" in message
    assert "fatal error: cuda_runtime.h: No such file or directory" in message and "set CUDA_HOME" in message
    assert "VERBOSE=1 python -m gslrm.render.gsplat_kernels" in message and "TORCH_CUDA_ARCH_LIST" not in message


def _hold_lock(path, log, seconds):
    from gslrm.files import exclusive_lock

    with exclusive_lock(Path(path)):
        with open(log, "a") as out:
            out.write(f"enter {time.monotonic()}\n")
        time.sleep(seconds)
        with open(log, "a") as out:
            out.write(f"leave {time.monotonic()}\n")


@pytest.mark.slow  # starts Python processes
def test_the_build_lock_lets_one_process_build_at_a_time(tmp_path):
    """What keeps concurrent first uses (DDP ranks, array jobs) from deleting each other's gsplat build."""
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hold_lock, args=(tmp_path / "x.lock", log, 0.4)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["enter", "leave"] * 3  # never two inside at once


def test_gsplat_kernels_command_without_a_gpu_builds_nothing_and_says_how(monkeypatch, capsys):
    from gslrm.render import gsplat_kernels

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gsplat_kernels, "_load_backend", lambda: pytest.fail("must not build"))
    assert gsplat_kernels.main() == 0
    assert "TORCH_CUDA_ARCH_LIST" in capsys.readouterr().out
