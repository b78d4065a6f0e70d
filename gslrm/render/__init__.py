"""One ``render()`` entry: RGB, expected z-depth and alpha of a batch of Gaussians seen by a batch of cameras.

The backend follows the device: ``gsplat.rasterization`` on CUDA (batched over scenes x views in one call,
``render_mode="RGB+ED"``); on CPU the compiled projection and rasterizer (``compiled_projection.py``, ``compiled.py``:
C++ built on first use) or, where it cannot be built or ``cpu_backend="torch"``, gsplat's PyTorch projection
(``projection.py``) and the tiled PyTorch rasterizer (``tiles.py``), the readable references.
All use FaceLift's near 0.01 / far 100, eps2d 0.3, and blend over the background (white by default). ``deferred=True`` renders without a graph and
re-renders one view at a time in the backward pass (FaceLift's deferred backpropagation, ``deferred.py``).
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


def _render_gsplat(gaussians: Gaussians, c2w, fxfycxcy, width, height, background) -> Tensor:
    from gsplat import rasterization

    from gslrm.cameras import intrinsics_matrix
    from gslrm.render.gsplat_kernels import ensure_kernels

    ensure_kernels()  # once per process: built under a lock (concurrent first builds break), or a one-line error
    colors, alphas, _ = rasterization(
        means=gaussians.means,
        quats=gaussians.quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=gaussians.features,
        viewmats=torch.linalg.inv(c2w),
        Ks=intrinsics_matrix(fxfycxcy),
        width=width,
        height=height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS2D,
        sh_degree=gaussians.sh_degree,
        backgrounds=background,
        render_mode="RGB+ED",
        packed=False,
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
