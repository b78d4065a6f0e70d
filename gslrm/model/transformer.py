"""FaceLift's transformer: pre-LN blocks with no bias anywhere, GELU MLP (ratio 4), no positional embeddings.

Attribute names match FaceLift's (``norm1``, ``attn.to_qkv``, ``attn.fc``, ``norm2``, ``mlp.mlp.0``, ``mlp.mlp.2``) so
its checkpoints load key for key. Attention is ``F.scaled_dot_product_attention``: flash / memory-efficient kernels
on GPU (FaceLift needed xformers for this), the math kernel on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["Transformer", "Block", "init_weights"]


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.fc = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        q, k, v = rearrange(self.to_qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.fc(rearrange(out, "b h n e -> b n (h e)"))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, ratio * dim, bias=False), nn.GELU(), nn.Linear(ratio * dim, dim, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class Block(nn.Module):
    def __init__(self, dim: int, head_dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, bias=False)
        self.attn = Attention(dim, head_dim)
        self.norm2 = nn.LayerNorm(dim, bias=False)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.ModuleList):
    """The block stack (a ModuleList so keys read ``transformer_layers.{i}....`` as in FaceLift)."""

    def __init__(self, dim: int, depth: int, head_dim: int, gradient_checkpointing: bool = False) -> None:
        super().__init__([Block(dim, head_dim) for _ in range(depth)])
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: Tensor) -> Tensor:
        for block in self:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def init_weights(module: nn.Module) -> None:
    """nanoGPT-style init as FaceLift: every Linear normal(0, 0.02) (no biases exist)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
