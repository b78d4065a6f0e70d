"""The pixel-aligned Gaussians' heads: FaceLift's linear one (``model.pixel_decoder=linear``, the default) and a
per-pixel one that is not FaceLift's (``model.pixel_decoder=mlp``). Both map (tokens, posed input) to raw channels in
image layout, so the model calls either the same way.

FaceLift decodes the Gaussians of a patch's p*p pixels from its token through one linear layer (LN + Linear(d ->
p*p*14)): every pixel's 14 numbers are a linear read-out of the same 128-dim token, so a 1-pixel-wide tail inside a
4x4 patch must be spelled out in the token, and the pixel's own colour reaches its Gaussian only through the
transformer. In the default run's checkpoints the animal's Gaussians came out blurred, mostly transparent and without
the tail even in the input view that shows it (docs/training.md#five-more-levers).

This head keeps the linear read-out, to ``hidden`` features per pixel instead of 14 numbers, and then runs a small
MLP on each pixel over those features concatenated with the pixel's own 9-channel posed input (colour and ray), so
every pixel's Gaussian sees its own colour and ray at full resolution. Its colour starts from the pixel's colour:
the degree-0 SH of the pixel's RGB is added to the head's output (the MLP learns a correction, not the identity).
Measured in the default run's time it bought nothing over FaceLift's head (docs/training.md#two-more-levers).
"""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from gslrm.model.gaussians import SH_C0

__all__ = ["LinearPixelDecoder", "PixelMLPDecoder", "POSED_CHANNELS"]

POSED_CHANNELS = 9  # [rgb*2-1, ray direction, nearest point]: gslrm.cameras.posed_input


class LinearPixelDecoder(nn.Sequential):
    """FaceLift's head: LN + Linear(d -> p*p*c) per token (a Sequential, so its keys are FaceLift's
    ``pixel_gaussian_decoder.0/1.weight``)."""

    def __init__(self, dim: int, patch_size: int, channels: int) -> None:
        super().__init__(nn.LayerNorm(dim, bias=False), nn.Linear(dim, patch_size * patch_size * channels, bias=False))
        self.patch_size = patch_size

    def forward(self, tokens: Float[Tensor, "b n d"], posed: Float[Tensor, "b v 9 h w"]) -> Float[Tensor, "b v c h w"]:
        p = self.patch_size
        views, height = posed.shape[1], posed.shape[-2]
        return rearrange(
            super().forward(tokens),
            "b (v hp wp) (ph pw c) -> b v c (hp ph) (wp pw)",
            v=views,
            hp=height // p,
            ph=p,
            pw=p,
        )


class PixelMLPDecoder(nn.Module):
    def __init__(self, dim: int, patch_size: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.token_to_pixels = nn.Sequential(
            nn.LayerNorm(dim, bias=False), nn.Linear(dim, patch_size * patch_size * hidden, bias=False)
        )
        self.pixel_mlp = nn.Sequential(
            nn.Linear(hidden + POSED_CHANNELS, hidden), nn.GELU(), nn.Linear(hidden, channels)
        )

    def forward(self, tokens: Float[Tensor, "b n d"], posed: Float[Tensor, "b v 9 h w"]) -> Float[Tensor, "b v c h w"]:
        """Raw (pre-activation) channels of every pixel's Gaussian, in gslrm.model.gaussians' channel order."""
        p = self.patch_size
        _, views, _, height, width = posed.shape
        features = rearrange(
            self.token_to_pixels(tokens),
            "b (v hp wp) (ph pw c) -> b v hp ph wp pw c",
            v=views,
            hp=height // p,
            ph=p,
            pw=p,
        )
        features = rearrange(features, "b v hp ph wp pw c -> b v (hp ph) (wp pw) c")
        pixels = rearrange(posed.to(features.dtype), "b v c h w -> b v h w c")
        raw = self.pixel_mlp(torch.cat([features, pixels], dim=-1))
        # the colour prior: f_dc = (rgb - 0.5) / C0 renders as the pixel's own colour (rgb*2-1 is the posed input)
        rgb_dc = pixels[..., :3] / (2.0 * SH_C0)
        raw = torch.cat([raw[..., :3], raw[..., 3:6] + rgb_dc, raw[..., 6:]], dim=-1)
        return rearrange(raw, "b v h w c -> b v c h w")
