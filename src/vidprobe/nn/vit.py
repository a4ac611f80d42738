"""The pre-norm ViT block: ``Mlp``, ``LayerScale``, ``Attention``, ``Block``.

Parameter names are those of timm / DINOv2 / VGGT / CroCo / V-JEPA
checkpoints: ``norm1, attn.qkv, attn.q_norm, attn.k_norm, attn.proj,
ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma`` (no ``q_norm`` / ``k_norm``
without QK-norm, no ``ls*`` without LayerScale).

:class:`Block` of width ``d`` on ``x [B, N, d]``::

    x = x + ls1(attn(norm1(x), pos))
    x = x + ls2(mlp(norm2(x)))

Parameters of one block, MLP ratio 4, head dimension ``hd``: ``12 d^2 + 13 d``
(+ ``2 d`` with LayerScale, + ``4 hd`` with QK-norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``: ``[..., dim] -> [..., out]`` (``out`` defaults to ``dim``).

    ``approximate``: the GELU's (``"none"``: exact erf; ``"tanh"``).
    """

    def __init__(self, dim: int, hidden: int, out: int | None = None, bias: bool = True, approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, out if out is not None else dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """``x * gamma`` with a learned per-channel ``gamma [dim]`` initialised to ``init``."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention ``[B, N, dim] -> [B, N, dim]``.

    Optional QK-norm (a LayerNorm over the head dimension on queries and keys,
    before RoPE) and a rotary embedding module ``rope`` (called as
    ``rope(q, pos)`` with the ``pos`` given to :meth:`forward`; see
    :class:`vidprobe.nn.rope.RoPE2D`). Attention through
    :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale``
    (default ``head_dim ** -0.5``); q and k are cast to v's dtype first (under
    autocast the LayerNorm'd q / k come back in fp32, v in the autocast dtype).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, dim]``; ``pos``: token positions for ``rope`` (``[N, 2]`` or ``[B, N, 2]``), or None."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block ``[B, N, dim] -> [B, N, dim]`` (see the module docstring).

    ``init_values``: LayerScale init (None or <= 0: no LayerScale);
    ``norm_eps``: eps of both LayerNorms; ``attn_scale``: the attention scale
    (None: ``head_dim ** -0.5``); ``rope``: a rotary embedding module shared
    with other blocks (it holds no parameters).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        norm_eps: float = 1e-5,
        init_values: float | None = None,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
        attn_scale: float | None = None,
    ):
        super().__init__()
        scaled = init_values is not None and init_values > 0
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm, rope, attn_scale)
        self.ls1 = LayerScale(dim, init_values) if scaled else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if scaled else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))
