"""FaceLift's optimizer and schedule: AdamW (0.9, 0.95), weight decay only on tensors with >= 2 dims,
linear warmup then cosine decay to 0 per step (as transformers' get_cosine_schedule_with_warmup)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["OptimConfig", "build_optimizer", "warmup_cosine"]


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

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas: expected two values, not {list(self.betas)}")


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
