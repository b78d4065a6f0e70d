"""One sample batch in, Gaussians and renders out: the step training, validation, eval and refinement share."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from gslrm.data.resolution import resize_views
from gslrm.model.gaussians import Gaussians
from gslrm.model.gslrm import GSLRM, ModelOutput
from gslrm.render import RenderConfig, RenderOutput, render

__all__ = ["predict_gaussians", "predict_and_render", "renderer"]


def renderer(gaussians: Gaussians, batch: dict, settings: RenderConfig) -> Callable[[Tensor, Tensor], RenderOutput]:
    """``(c2w [b, n, 4, 4], fxfycxcy [b, n, 4]) -> RenderOutput`` of ``gaussians`` at the batch's image size and
    background: other cameras for the same Gaussians (pseudo views, refinement)."""
    height, width = batch["image"].shape[-2:]

    def render_cameras(c2w: Tensor, fxfycxcy: Tensor) -> RenderOutput:
        return render(
            gaussians, c2w, fxfycxcy, width, height, background=batch["bg_color"], settings=settings, deferred=False
        )

    return render_cameras


def predict_gaussians(
    model: GSLRM, batch: dict, num_input_views: int, clip_xyz: bool | None = None, input_size: int | None = None
) -> ModelOutput:
    """The model on the first ``num_input_views`` views of ``batch`` (their RGB, with the alpha where the model reads
    the masks: ``model.hull_depth``; cameras and intrinsics), resized to ``input_size`` pixels across where given (a
    model trained at another size than the data's, eval.input_size)."""
    inputs, channels = num_input_views, 4 if model.config.hull_depth else 3
    image, c2w = batch["image"][:, :inputs, :channels], batch["c2w"][:, :inputs]
    fxfycxcy = batch["fxfycxcy"][:, :inputs]
    if input_size is not None and input_size != image.shape[-1]:
        image, fxfycxcy = resize_views(image, fxfycxcy, input_size)
    return model(image, c2w, fxfycxcy, clip_xyz=clip_xyz)


def predict_and_render(
    model: GSLRM,
    batch: dict,
    num_input_views: int,
    settings: RenderConfig,
    training: bool = False,
    clip_xyz: bool | None = None,
    background: Tensor | None = None,
    input_size: int | None = None,
) -> tuple[ModelOutput, RenderOutput]:
    """Gaussians from the first ``num_input_views`` views of ``batch``, rendered into every view of it
    (FaceLift supervises all views, the inputs included; eval separates the novel ones) on ``background``
    (default: the batch's ``bg_color``); the inputs resized to ``input_size`` where given."""
    image, c2w, fxfycxcy = batch["image"], batch["c2w"], batch["fxfycxcy"]
    output = predict_gaussians(model, batch, num_input_views, clip_xyz, input_size)
    height, width = image.shape[-2:]
    rendered = render(
        output.gaussians,
        c2w,
        fxfycxcy,
        width,
        height,
        background=batch["bg_color"] if background is None else background,
        settings=settings,
        deferred=settings.deferred and training,
    )
    return output, rendered
