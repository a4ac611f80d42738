"""Transformer building blocks of the probe.

- :class:`RoPE2D`: 2D rotary position embedding on a patch grid. The head
  dimension ``D`` is split in two halves; the first half is rotated by the
  row (y) position, the second by the column (x) position. Inside each half
  the channels ``i`` and ``i + D/4`` form a rotation pair with angular
  frequency ``base ** (-i / (D/4))`` (``i < D/4``), base 100 by default.
  Patch tokens sit at positions ``(row + 1, col + 1)``; special tokens
  (camera, registers) sit at ``(0, 0)``, i.e. a rotation by angle 0: they
  are not rotated at all and their scores with a patch depend only on the
  patch's own position.
- :class:`Attention`: multi-head self-attention with optional QK-norm
  (LayerNorm over the head dimension, applied to queries and keys before
  RoPE) through :func:`torch.nn.functional.scaled_dot_product_attention`.
- :class:`LayerScale`, :class:`Mlp` (Linear-GELU-Linear) and the pre-norm
  :class:`Block`: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

Parameters of one :class:`Block` of width ``d``, MLP ratio 4, head
dimension ``hd``: ``12 d^2 + 15 d`` (+ ``4 hd`` with QK-norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RoPE2D(nn.Module):
    """Cos/sin tables for 2D rotary embeddings on ``[N, 2]`` (y, x) positions."""

    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE2D: head_dim must be divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        inv_freq = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.head_dim = head_dim

    def tables(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pos [N, 2]`` -> ``(cos, sin)``, each ``[N, head_dim]`` (float32)."""
        pos = pos.to(self.inv_freq.dtype)
        ang_y = pos[:, 0:1] * self.inv_freq  # [N, D/4]
        ang_x = pos[:, 1:2] * self.inv_freq
        ang = torch.cat([ang_y, ang_y, ang_x, ang_x], dim=-1)  # [N, D]
        return ang.cos(), ang.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Within each half of the last dim, map ``(a, b)`` -> ``(-b, a)``."""
    d = x.shape[-1]
    q = d // 4
    a1, b1, a2, b2 = x[..., :q], x[..., q : 2 * q], x[..., 2 * q : 3 * q], x[..., 3 * q :]
    return torch.cat([-b1, a1, -b2, a2], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., N, D]`` by the tables ``cos, sin [N, D]``."""
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return x * cos + _rotate_pairs(x) * sin


def grid_positions(h: int, w: int, num_special: int, device=None) -> torch.Tensor:
    """Positions ``[num_special + h*w, 2]``: specials at (0, 0), patch (r, c) at (r+1, c+1)."""
    rows = torch.arange(h, device=device).repeat_interleave(w) + 1
    cols = torch.arange(w, device=device).repeat(h) + 1
    patch = torch.stack([rows, cols], dim=-1)
    special = torch.zeros(num_special, 2, dtype=patch.dtype, device=device)
    return torch.cat([special, patch], dim=0)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        # under autocast the LayerNorm'd q/k come back in fp32: attend in v's (autocast) dtype
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out if out is not None else dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with QK-norm, LayerScale and optional RoPE."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, layerscale: float = 0.01):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, layerscale) if layerscale and layerscale > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale) if layerscale and layerscale > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
