"""Deferred backpropagation (FaceLift's training renderer): render every view without a graph, then in the backward
pass re-render one (scene, view) at a time with a graph and push its slice of the gradient through it.

Peak memory becomes one view's rasterization graph instead of all of them, for the price of a second rasterization.
Cameras get no gradient (as in FaceLift).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gslrm.model.gaussians import Gaussians

__all__ = ["render_deferred"]


class _DeferredRender(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, features, scales, quats, opacities, c2w, fxfycxcy, background, size, settings):
        from gslrm.render import render_views

        ctx.save_for_backward(means, features, scales, quats, opacities, c2w, fxfycxcy)
        ctx.background, ctx.size, ctx.settings = background, size, settings
        gaussians = Gaussians(means, features, scales, quats, opacities)
        with torch.no_grad():
            return render_views(gaussians, c2w, fxfycxcy, *size, background, settings)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        from gslrm.render import render_views

        means, features, scales, quats, opacities, c2w, fxfycxcy = ctx.saved_tensors
        leaves = [t.detach().requires_grad_(True) for t in (means, features, scales, quats, opacities)]
        background = ctx.background
        width, height = ctx.size
        with torch.enable_grad():
            for b in range(c2w.shape[0]):
                scene = Gaussians(*(leaf[b : b + 1] for leaf in leaves))
                scene_background = (
                    background[b : b + 1] if background is not None and background.dim() == 2 else background
                )
                for v in range(c2w.shape[1]):
                    out = render_views(
                        scene,
                        c2w[b : b + 1, v : v + 1],
                        fxfycxcy[b : b + 1, v : v + 1],
                        width,
                        height,
                        scene_background,
                        ctx.settings,
                    )
                    out.backward(grad_output[b : b + 1, v : v + 1])
        grads = [leaf.grad for leaf in leaves]
        return (*grads, None, None, None, None, None)


def render_deferred(gaussians: Gaussians, c2w, fxfycxcy, width: int, height: int, background, settings) -> Tensor:
    return _DeferredRender.apply(
        gaussians.means,
        gaussians.features,
        gaussians.scales,
        gaussians.quats,
        gaussians.opacities,
        c2w.detach(),
        fxfycxcy.detach(),
        background,
        (width, height),
        settings,
    )
