"""Pseudo cameras: views on the rig's orbit between its training cameras, where no photo was taken.

In the normalized frame the rig looks at the origin with +Z up. The training cameras are ordered by azimuth; an orbit
position u in [0, 1) falls between neighbours k = floor(u * V) and k + 1 (cyclically) at t = frac(u * V); the pseudo
camera's azimuth, horizontal radius, height and intrinsics are interpolated between the two, and it looks at the origin.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.cameras import look_at_c2w

__all__ = ["orbit_cameras", "PseudoStack"]


def orbit_cameras(
    c2w: Float[Tensor, "v 4 4"], fxfycxcy: Float[Tensor, "v 4"], positions: Float[Tensor, " n"]
) -> tuple[Float[Tensor, "n 4 4"], Float[Tensor, "n 4"]]:
    views = c2w.shape[0]
    centres = c2w[:, :3, 3]
    azimuth = torch.atan2(centres[:, 1], centres[:, 0])
    order = torch.argsort(azimuth)
    scaled = positions.to(c2w) * views
    first = scaled.floor().long().clamp(0, views - 1)
    t = (scaled - first)[:, None]
    a, b = order[first], order[(first + 1) % views]
    start = azimuth[a]
    sweep = torch.remainder(azimuth[b] - start, 2 * math.pi)  # forward to the next camera (a full turn if V = 1)
    sweep = torch.where(sweep == 0, torch.full_like(sweep, 2 * math.pi), sweep)
    angle = start + t[:, 0] * sweep
    radius = torch.lerp(centres[a, :2].norm(dim=-1), centres[b, :2].norm(dim=-1), t[:, 0])
    height = torch.lerp(centres[a, 2], centres[b, 2], t[:, 0])
    position = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), height], dim=-1)
    return look_at_c2w(position, torch.zeros_like(position)), torch.lerp(fxfycxcy[a], fxfycxcy[b], t)


class PseudoStack:
    """The pseudo stack: ``size`` evenly spread orbit positions, popped at random, refilled when empty."""

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.stack: list[float] = []

    def pop(self) -> float:
        if not self.stack:
            self.stack = list((np.arange(self.size) + 0.5) / self.size)
        return float(self.stack.pop(int(self.rng.integers(len(self.stack)))))
