"""One ``render()`` entry: RGB, expected z-depth and alpha of a batch of Gaussians seen by a batch of cameras.

The backend follows the device: ``gsplat.rasterization`` on CUDA (batched over scenes x views in one call,
``render_mode="RGB+ED"``, split where the call would pass gsplat's int32 limit on tile intersections); on CPU the
compiled projection and rasterizer (``compiled_projection.py``, ``compiled.py``: C++ built on first use) or, where it
cannot be built or ``cpu_backend="torch"``, gsplat's PyTorch projection (``projection.py``) and the tiled PyTorch
rasterizer (``tiles.py``), the readable references. All use FaceLift's near 0.01 / far 100, eps2d 0.3, and blend over
the background (white by default). ``deferred=True`` renders without a graph and re-renders one view at a time in
the backward pass (FaceLift's deferred backpropagation, ``deferred.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.model.gaussians import Gaussians
from gslrm.render.projection import EPS2D, FAR_PLANE, NEAR_PLANE, project
from gslrm.render.tiles import GSPLAT_MAX_ALPHA, rasterize_tiles

__all__ = ["RenderConfig", "RenderOutput", "render", "render_views", "CpuBackend"]

log = logging.getLogger(__name__)


class CpuBackend(StrEnum):
    auto = "auto"  # compiled if it builds, else torch (one warning)
    compiled = "compiled"  # required: fails where it cannot be built
    torch = "torch"  # the PyTorch reference


@dataclass
class RenderConfig:
    deferred: bool = False  # FaceLift's deferred backpropagation: one view's graph at a time (less memory, ~2x time)
    tile_size: int = 8  # CPU rasterizers only
    max_alpha: float = GSPLAT_MAX_ALPHA  # 0.999 as gsplat; FaceLift's graphdeco rasterizer used 0.99
    cpu_backend: CpuBackend = CpuBackend.auto


@dataclass
class RenderOutput:
    rgb: Float[Tensor, "b v 3 h w"]
    depth: Float[Tensor, "b v 1 h w"]  # expected z-depth: sum(w z) / sum(w), 0 where nothing was hit
    alpha: Float[Tensor, "b v 1 h w"]


def _backgrounds(background: Tensor | None, batch: int, views: int, device, dtype) -> Tensor:
    if background is None:
        background = torch.ones(3, device=device, dtype=dtype)
    background = background.to(device=device, dtype=dtype)
    if background.dim() == 1:
        background = background.expand(batch, 3)
    return background[:, None, :].expand(batch, views, 3)


# gsplat 1.5 indexes its depth-sorted list of (Gaussian, 16 px tile) pairs with int32 offsets: a call with more
# than 2^31 - 1 pairs breaks inside its kernels. Seen on an H200: model=base at 512 px, 4 + 6 views, batch 4, initial
# weights stopped with "CUDA error: operation not supported on global/shared address space"; estimated on CPU with
# the kernel's opacity-aware radii, that call has about 2.3e9 pairs (92 tiles per Gaussian and view), batch 2 (which
# ran) 1.15e9. Calls over the limit are split by scene, then by view.
GSPLAT_MAX_INTERSECTIONS = 2**31 - 1
GSPLAT_TILE_SIZE = 16  # rasterization()'s default


def _gsplat_intersections(gaussians: Gaussians, viewmats, ks, width: int, height: int) -> Tensor:
    """[b, v] int64: the (Gaussian, tile) pairs each view of each scene gives gsplat's sort, from its own projection's
    radii counted over its 16 px tiles as its tile intersection counts them (clamped at the image)."""
    from gsplat import rendering  # the projection rasterization() calls (the CPU tests swap it there)

    with torch.no_grad():
        radii, means2d = rendering.fully_fused_projection(
            gaussians.means,
            None,
            gaussians.quats,
            gaussians.scales,
            viewmats,
            ks,
            width,
            height,
            eps2d=EPS2D,
            near_plane=NEAR_PLANE,
            far_plane=FAR_PLANE,
            opacities=gaussians.opacities,
        )[:2]
        tiles = means2d.new_tensor([-(-width // GSPLAT_TILE_SIZE), -(-height // GSPLAT_TILE_SIZE)])
        centre, radius = means2d / GSPLAT_TILE_SIZE, radii / GSPLAT_TILE_SIZE  # in tiles, rounded as gsplat rounds
        low = torch.minimum(torch.floor(centre - radius).clamp(min=0), tiles)
        high = torch.minimum(torch.ceil(centre + radius).clamp(min=0), tiles)
        per_gaussian = (high - low).to(torch.int64).prod(dim=-1) * (radii > 0).all(dim=-1)
        return per_gaussian.sum(dim=-1)


def _view_groups(counts: list[int], limit: int) -> list[slice]:
    """Consecutive views whose counts add up to at most ``limit`` (a view over it alone: nothing smaller to split)."""
    groups, start, total = [], 0, 0
    for view, count in enumerate(counts):
        if view > start and total + count > limit:
            groups.append(slice(start, view))
            start, total = view, 0
        total += count
    return groups + [slice(start, len(counts))]


def _render_gsplat(gaussians: Gaussians, c2w, fxfycxcy, width, height, background) -> Tensor:
    from gslrm.cameras import intrinsics_matrix
    from gslrm.render.gsplat_kernels import ensure_kernels

    ensure_kernels()  # once per process: built under a lock (concurrent first builds break), or a one-line error
    viewmats, ks = torch.linalg.inv(c2w), intrinsics_matrix(fxfycxcy)
    batch, views = c2w.shape[:2]
    tiles = -(-width // GSPLAT_TILE_SIZE) * -(-height // GSPLAT_TILE_SIZE)
    if batch * views * gaussians.means.shape[1] * tiles <= GSPLAT_MAX_INTERSECTIONS:  # cannot reach it: no count
        return _rasterize_gsplat(gaussians, viewmats, ks, width, height, background)
    counts = _gsplat_intersections(gaussians, viewmats, ks, width, height)
    if counts.sum().item() <= GSPLAT_MAX_INTERSECTIONS:
        return _rasterize_gsplat(gaussians, viewmats, ks, width, height, background)
    scenes, calls = [], 0
    for b in range(batch):
        scene = gaussians.map(lambda t, b=b: t[b : b + 1])
        groups = _view_groups(counts[b].tolist(), GSPLAT_MAX_INTERSECTIONS)
        parts = [
            _rasterize_gsplat(scene, viewmats[b : b + 1, g], ks[b : b + 1, g], width, height, background[b : b + 1, g])
            for g in groups
        ]
        scenes.append(torch.cat(parts, dim=1))
        calls += len(groups)
    log.debug("gsplat: %d (Gaussian, tile) pairs, rendered in %d calls", counts.sum().item(), calls)
    return torch.cat(scenes, dim=0)


def _rasterize_gsplat(gaussians: Gaussians, viewmats, ks, width, height, background) -> Tensor:
    from gsplat import rasterization

    colors, alphas, _ = rasterization(
        means=gaussians.means,
        quats=gaussians.quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=gaussians.features,
        viewmats=viewmats,
        Ks=ks,
        width=width,
        height=height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS2D,
        sh_degree=gaussians.sh_degree,
        backgrounds=background,
        render_mode="RGB+ED",
        packed=False,
        tile_size=GSPLAT_TILE_SIZE,
    )  # [b, v, h, w, 4], [b, v, h, w, 1]
    return torch.cat([colors, alphas], dim=-1)


@cache
def _compiled_or_warn(required: bool) -> bool:
    """Whether the compiled rasterizer is usable; without it, ``required`` is an error and ``auto`` warns once."""
    from gslrm.render import compiled

    if compiled.available():
        return True
    if required:
        raise RuntimeError(
            f"render.cpu_backend=compiled, but the compiled rasterizer is unavailable: {compiled.unavailable_reason()}"
        )
    log.warning(
        "compiled CPU rasterizer unavailable (%s): rendering with the torch path, about 20x slower",
        compiled.unavailable_reason(),
    )
    return False


def _render_cpu(gaussians: Gaussians, c2w, fxfycxcy, width, height, background, settings: RenderConfig) -> Tensor:
    batch, views = c2w.shape[:2]
    rasterize = rasterize_tiles
    if settings.cpu_backend != "torch" and _compiled_or_warn(settings.cpu_backend == "compiled"):
        from gslrm.render.compiled import rasterize_compiled as rasterize
        from gslrm.render.compiled_projection import project_compiled, supports

        splats = (project_compiled if supports(gaussians, c2w, fxfycxcy) else project)(
            gaussians, c2w, fxfycxcy, width, height
        )
    else:
        splats = project(gaussians, c2w, fxfycxcy, width, height)
    backgrounds = torch.cat([background, torch.zeros_like(background[..., :1])], dim=-1).reshape(batch * views, 4)
    colors, alphas = rasterize(
        splats, width, height, backgrounds, tile_size=settings.tile_size, max_alpha=settings.max_alpha
    )
    depth = colors[..., 3:] / alphas.clamp(min=1e-10)  # expected depth, as gsplat's "ED"
    out = torch.cat([colors[..., :3], depth, alphas], dim=-1)
    return out.reshape(batch, views, height, width, 5)


def render_views(
    gaussians: Gaussians,
    c2w: Tensor,
    fxfycxcy: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    settings: RenderConfig | None = None,
) -> Float[Tensor, "b v h w 5"]:
    """Channels-last ``[rgb, depth, alpha]`` (the form the deferred path re-renders)."""
    settings = settings or RenderConfig()
    batch, views = c2w.shape[:2]
    dtype = torch.float64 if gaussians.means.dtype == torch.float64 else torch.float32  # never bf16/fp16
    gaussians = gaussians.map(lambda t: t.to(dtype))
    c2w, fxfycxcy = c2w.to(dtype), fxfycxcy.to(dtype)
    backgrounds = _backgrounds(background, batch, views, c2w.device, dtype)
    if gaussians.means.shape[1] == 0:  # nothing to draw (an export filter can keep none): the background, alpha 0;
        # the compiled rasterizer's loops assume at least one splat (it crashed here), and gsplat's kernels are untested
        empty = backgrounds.new_zeros(batch, views, height, width, 2)
        return torch.cat([backgrounds[:, :, None, None, :].expand(-1, -1, height, width, -1), empty], dim=-1)
    if c2w.is_cuda:
        return _render_gsplat(gaussians, c2w, fxfycxcy, width, height, backgrounds)
    return _render_cpu(gaussians, c2w, fxfycxcy, width, height, backgrounds, settings)


def render(
    gaussians: Gaussians,
    c2w: Float[Tensor, "b v 4 4"],
    fxfycxcy: Float[Tensor, "b v 4"],
    width: int,
    height: int,
    background: Tensor | None = None,
    settings: RenderConfig | None = None,
    deferred: bool | None = None,
) -> RenderOutput:
    """Render every view of every scene; in fp32 (fp64 for fp64 inputs) whatever the autocast context, as FaceLift.
    ``deferred`` (default: ``settings.deferred``) applies only when gradients are being recorded."""
    settings = settings or RenderConfig()
    deferred = settings.deferred if deferred is None else deferred
    with torch.autocast(device_type=c2w.device.type, enabled=False):
        if deferred and torch.is_grad_enabled():
            from gslrm.render.deferred import render_deferred

            out = render_deferred(gaussians, c2w, fxfycxcy, width, height, background, settings)
        else:
            out = render_views(gaussians, c2w, fxfycxcy, width, height, background, settings)
    out = out.permute(0, 1, 4, 2, 3)
    return RenderOutput(rgb=out[:, :, :3], depth=out[:, :, 3:4], alpha=out[:, :, 4:5])
