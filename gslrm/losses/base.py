"""What every loss term sees, and the term base class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig

__all__ = ["LossInputs", "TermConfig", "Term"]


@dataclass
class LossInputs:
    render: Float[Tensor, "b v 3 h w"]  # not clamped before the loss, as FaceLift
    target: Float[Tensor, "b v 3 h w"]  # RGB composited on the background
    mask: Float[Tensor, "b v 1 h w"]  # target alpha
    background: Float[Tensor, "b 3"]
    gaussians: Gaussians
    pixel_means: Float[Tensor, "b vi 3 h w"]  # pixel-aligned means of the input views
    ray_o: Float[Tensor, "b vi 3 h w"]
    ray_d: Float[Tensor, "b vi 3 h w"]
    input_mask: Float[Tensor, "b vi 1 h w"]
    # for the depth-aware terms; the loss computer reads depth_prior and confidence from the batch (data)
    depth: Float[Tensor, "b v 1 h w"] | None = None  # rendered expected depth
    alpha: Float[Tensor, "b v 1 h w"] | None = None  # rendered alpha (opacity accumulated along each ray)
    batch: dict | None = None  # the data batch (cameras, image names, depth / confidence maps)
    render_fn: Callable | None = None  # (c2w [b, n, 4, 4], fxfycxcy [b, n, 4]) -> RenderOutput of these Gaussians
    depth_prior: Float[Tensor, "b v 1 h w"] | None = None  # disparity
    confidence: Float[Tensor, "b v 1 h w"] | None = None
    render_settings: RenderConfig | None = None  # how the step rendered (terms that render Gaussians of their own)


@dataclass
class TermConfig:
    weight: float = 0.0


class Term(nn.Module):
    """A loss term: ``forward(inputs) -> scalar``. Its weight lives in its config; the computer applies it."""

    name: str = "term"

    def __init__(self, config: TermConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, inputs: LossInputs) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def flat_images(x: Tensor) -> Tensor:
    """[b, v, c, h, w] -> [b*v, c, h, w]."""
    return x.reshape(-1, *x.shape[2:])


def foreground(mask: Tensor) -> Tensor:
    return (mask > 0.5).to(torch.float32)
