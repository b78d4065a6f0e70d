"""FaceLift's optimizer and schedule: AdamW (0.9, 0.95), weight decay only on tensors with >= 2 dims,
linear warmup then cosine decay to 0 per step (as transformers' get_cosine_schedule_with_warmup).

``optim.restart_at`` splits the schedule into segments, each its own warm-up and cosine to 0 at the next segment's
first step: GS-LRM trains at 256 px and then fine-tunes at 512 px as a second run with a schedule of its own, and a
restart at ``data.image_size_schedule``'s switch does the same inside one run (docs/training.md#levers-on-exact-masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["OptimConfig", "build_optimizer", "warmup_cosine", "restarted_warmup_cosine"]


@dataclass
class OptimConfig:
    lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05
    warmup_steps: int = 100
    total_steps: int | None = None  # default: trainer.max_steps
    grad_clip: float = 1.0
    allowed_gradnorm_factor: float = 20.0  # skip a step whose grad norm > factor x running mean
    gradnorm_ema: float = 0.99  # running mean of accepted steps' grad norms
    skip_warmup_steps: int = 50  # the running mean needs this many accepted steps before it can skip
    # steps where the schedule starts again: a new warm-up to restart_peak x lr, then cosine to 0 at the next restart
    # (or the end); the segment before each restart decays to 0 at it. Empty: FaceLift's one warm-up and cosine.
    restart_at: list[int] = field(default_factory=list)
    restart_peak: float = 1.0

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas: expected two values, not {list(self.betas)}")
        restarts = list(self.restart_at)
        if any(not isinstance(step, int) or step <= 0 for step in restarts) or restarts != sorted(set(restarts)):
            raise ValueError(f"optim.restart_at: expected increasing steps > 0, not {restarts}")
        if not 0.0 < self.restart_peak <= 1.0:
            raise ValueError(f"optim.restart_peak: expected a fraction of optim.lr in (0, 1], not {self.restart_peak}")


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in decay + no_decay) and torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), fused=fused or None)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0 at ``total`` (held at 0 after)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def restarted_warmup_cosine(
    step: int, warmup: int, total: int, restart_at: list[int] | tuple[int, ...] = (), restart_peak: float = 1.0
) -> float:
    """LR multiplier of a schedule that starts again at each step of ``restart_at``: segment k runs
    ``warmup_cosine`` over its own steps (the last ends at ``total``), at peak 1 for the first segment and
    ``restart_peak`` for the others. Without restarts it is ``warmup_cosine``."""
    starts = [0, *(s for s in restart_at if s < total)]
    segment = max(k for k, first in enumerate(starts) if step >= first)
    first = starts[segment]
    end = starts[segment + 1] if segment + 1 < len(starts) else total
    peak = 1.0 if segment == 0 else restart_peak
    return peak * warmup_cosine(step - first, warmup, end - first)
