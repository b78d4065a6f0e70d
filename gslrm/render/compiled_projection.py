"""``projection.project`` compiled (``csrc/project.cpp``): the same splats from the same Gaussians and cameras, and
gradients for the Gaussians' means, quaternions, scales, SH coefficients and opacities.

gsplat's PyTorch code (``projection.project``) stays the reference; tests/test_render.py holds the two to 1e-5 in
values and gradients. What the compiled path does not cover falls back to it (``supports``): SH degrees above 0 (no
model config uses them; FaceLift predicts degree 0) and cameras that require gradients (nothing here optimises them).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.model.gaussians import Gaussians
from gslrm.render.compiled import available, call
from gslrm.render.projection import EPS2D, FAR_PLANE, NEAR_PLANE, Splats

__all__ = ["project_compiled", "supports"]


def supports(gaussians: Gaussians, c2w: Tensor, fxfycxcy: Tensor) -> bool:
    """Whether the compiled projection computes what ``projection.project`` would (else use that)."""
    return (
        gaussians.sh_degree == 0
        and gaussians.means.device.type == "cpu"
        and not (c2w.requires_grad or fxfycxcy.requires_grad)
        and available()
    )


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, sh0, opacities, viewmats, intrinsics, layout):
        scenes, views, n, width, height, eps2d, near, far = layout
        dtype = means.dtype
        inputs = [t.contiguous() for t in (means, quats, scales, sh0, viewmats, intrinsics)]
        opacities = opacities.detach().contiguous()
        images = scenes * views
        means2d = torch.empty(images, n, 2, dtype=dtype)
        conics = torch.empty(images, n, 3, dtype=dtype)
        features = torch.empty(images, n, 4, dtype=dtype)
        depths = torch.empty(images, n, dtype=dtype)
        radii = torch.empty(images, n, 2, dtype=torch.int32)
        means, quats, scales, sh0, viewmats, intrinsics = inputs
        call(
            "gslrm_project_forward",
            dtype,
            **dict(zip(("means", "quats", "scales"), (means, quats, scales), strict=True)),
            opacities=opacities,
            sh0=sh0,
            **_cameras(viewmats, intrinsics, layout),
            means2d=means2d,
            conics=conics,
            features=features,
            depths=depths,
            radii=radii,
        )
        ctx.save_for_backward(*inputs, radii)
        ctx.layout = layout
        ctx.mark_non_differentiable(depths, radii)
        return means2d, conics, features, depths, radii

    @staticmethod
    def backward(ctx, grad_means2d, grad_conics, grad_features, _grad_depths, _grad_radii):
        means, quats, scales, sh0, viewmats, intrinsics, radii = ctx.saved_tensors
        scenes, views, n, width, height, eps2d, near, far = ctx.layout
        images = scenes * views

        def upstream(grad, channels):
            return means.new_zeros(images, n, channels) if grad is None else grad.contiguous()

        # held in a variable until the call returns: the library reads them through raw pointers
        upstreams = (upstream(grad_means2d, 2), upstream(grad_conics, 3), upstream(grad_features, 4))
        grads = [torch.empty_like(t) for t in (means, quats, scales, sh0)]
        call(
            "gslrm_project_backward",
            means.dtype,
            means=means,
            quats=quats,
            scales=scales,
            sh0=sh0,
            radii=radii,
            **_cameras(viewmats, intrinsics, ctx.layout),
            **dict(zip(("grad_means2d", "grad_conics", "grad_features"), upstreams, strict=True)),
            **dict(zip(("grad_means", "grad_quats", "grad_scales", "grad_sh0"), grads, strict=True)),
        )
        return (*grads, None, None, None, None)


def _cameras(viewmats: Tensor, intrinsics: Tensor, layout) -> dict:
    """The fields forward and backward share: the cameras, the image size and the projection's settings."""
    scenes, views, n, width, height, eps2d, near, far = layout
    return dict(
        viewmats=viewmats,
        intrinsics=intrinsics,
        scenes=scenes,
        views=views,
        gaussians=n,
        width=width,
        height=height,
        eps2d=eps2d,
        near_plane=near,
        far_plane=far,
        threads=torch.get_num_threads(),
    )


def project_compiled(
    gaussians: Gaussians,
    c2w: Float[Tensor, "b v 4 4"],
    fxfycxcy: Float[Tensor, "b v 4"],
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> Splats:
    """``projection.project`` for SH degree 0 on CPU (see ``supports``)."""
    if not supports(gaussians, c2w, fxfycxcy):
        raise ValueError("the compiled projection covers SH degree 0 on CPU with fixed cameras; use projection.project")
    batch, views = c2w.shape[:2]
    n = gaussians.means.shape[1]
    viewmats = torch.linalg.inv(c2w)
    layout = (batch, views, n, width, height, float(eps2d), float(near_plane), float(far_plane))
    means2d, conics, features, depths, radii = _Project.apply(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.features[:, :, 0, :],
        gaussians.opacities,
        viewmats,
        fxfycxcy,
        layout,
    )
    return Splats(
        means2d=means2d,
        conics=conics,
        features=features,
        opacities=gaussians.opacities[:, None].expand(-1, views, -1).reshape(batch * views, n),
        depths=depths,
        radii=radii,
    )
