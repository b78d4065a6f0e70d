"""One sample batch in, Gaussians and renders out: the step training, validation, eval and refinement share."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from gslrm.model.gaussians import Gaussians
from gslrm.model.gslrm import GSLRM, ModelOutput
from gslrm.render import RenderConfig, RenderOutput, render

__all__ = ["predict_gaussians", "predict_and_render", "renderer"]


def renderer(gaussians: Gaussians, batch: dict, settings: RenderConfig) -> Callable[[Tensor, Tensor], RenderOutput]:
    """``(c2w [b, n, 4, 4], fxfycxcy [b, n, 4]) -> RenderOutput`` of ``gaussians`` at the batch's image size and
    background: other cameras for the same Gaussians (pseudo views, refinement)."""
    height, width = batch["image"].shape[-2:]

    def render_cameras(c2w: Tensor, fxfycxcy: Tensor) -> RenderOutput:
        return render(gaussians, c2w, fxfycxcy, width, height, background=batch["bg_color"], settings=settings,
                      deferred=False)  # fmt: skip

    return render_cameras


def predict_gaussians(model: GSLRM, batch: dict, num_input_views: int, clip_xyz: bool | None = None) -> ModelOutput:
    """The model on the first ``num_input_views`` views of ``batch`` (their RGB, cameras and intrinsics)."""
    inputs = num_input_views
    image, c2w, fxfycxcy = batch["image"], batch["c2w"], batch["fxfycxcy"]
    return model(image[:, :inputs, :3], c2w[:, :inputs], fxfycxcy[:, :inputs], clip_xyz=clip_xyz)


def predict_and_render(
    model: GSLRM,
    batch: dict,
    num_input_views: int,
    settings: RenderConfig,
    training: bool = False,
    clip_xyz: bool | None = None,
    background: Tensor | None = None,
) -> tuple[ModelOutput, RenderOutput]:
    """Gaussians from the first ``num_input_views`` views of ``batch``, rendered into every view of it
    (FaceLift supervises all views, the inputs included; eval separates the novel ones) on ``background``
    (default: the batch's ``bg_color``)."""
    image, c2w, fxfycxcy = batch["image"], batch["c2w"], batch["fxfycxcy"]
    output = predict_gaussians(model, batch, num_input_views, clip_xyz)
    height, width = image.shape[-2:]
    rendered = render(
        output.gaussians, c2w, fxfycxcy, width, height,
        background=batch["bg_color"] if background is None else background,
        settings=settings, deferred=settings.deferred and training,
    )  # fmt: skip
    return output, rendered
