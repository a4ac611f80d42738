"""Open-Sora 2.0's MMDiT denoiser (11B: 19 double-stream + 38 single-stream blocks), our own implementation.

Why an own network
------------------
The denoiser is Flux-like (C = 3072, 24 heads of 128, RoPE axes (16, 56, 56))
but does **not** match diffusers' ``FluxTransformer2DModel`` block for block:
it was trained with Liger's *rotate-half* RoPE (``use_liger_rope=True``) where
Flux pairs interleaved channels, its single-stream blocks fuse ``v`` with the
MLP input (``v_mlp``; ``fused_qkv=False``), and it adds a zero-initialised
``cond_in`` projection of the image-to-video condition. Parameter names and
shapes are exactly those of the official ``Open_Sora_v2.safetensors``
(``tests/fixtures/opensora2_keys.json``, written from the release's
``MMDiTModel`` by ``tools/parity/opensora_mmdit.py``).

Parity with the release's ``opensora/models/mmdit`` is proven by
``tests/test_parity_opensora.py`` on the fixture
``tests/fixtures/parity/opensora_mmdit.safetensors`` (every block's image
stream and the final output, fp32, 1e-5). Casts follow the release so that
bf16 compute rounds where it rounds: the timestep embedding is formed in fp32
and cast to the timestep's dtype (the release's ``torch.compile``'d
``timestep_embedding``), RMSNorm normalises in fp32 and casts back before the
scale (Liger's ``casting_mode="llama"``), RoPE is applied in fp32 and cast back
to q's dtype (Liger's kernel); the bf16 end-to-end run of the fixture agrees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.nn import rope as nn_rope
from vidprobe.nn.rope import axial_rope_tables

PATCH = 2


@dataclass
class MMDiTConfig:
    """The release's ``MMDiTConfig`` fields that shape the weights (defaults: the 11B Open-Sora 2.0 model)."""

    in_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: list[int] = field(default_factory=lambda: [16, 56, 56])
    theta: int = 10_000
    qkv_bias: bool = True
    cond_embed: bool = True
    patch_size: int = PATCH

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0, time_factor: float = 1000.0):
    """``t [B]`` in [0,1] -> ``[B, dim]``: cos half then sin half of ``1000 t * freqs``, in ``t``'s dtype.

    ``1000 t`` is formed in fp32 and only the embedding is cast back to ``t``'s
    dtype: what the release computes, whose ``timestep_embedding`` runs under
    ``torch.compile`` (the fused kernel keeps the intermediate in fp32; run
    eagerly, the same code would round ``1000 t`` to bf16 first).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = (time_factor * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t.dtype) if torch.is_floating_point(t) else emb


rope_cos_sin = axial_rope_tables  # ``ids [B,L,3]`` -> rotate-half ``cos, sin [B,1,L,D]`` in fp32 (:mod:`vidprobe.nn.rope`)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B,H,L,D]``: ``x cos + rotate_half(x) sin`` (Liger / LLaMA layout), computed in fp32, cast back."""
    return nn_rope.apply_rope(x, cos, sin, chunks=1, fp32=True)


def attention(q, k, v, pe) -> torch.Tensor:
    """``q,k,v [B,H,L,D]`` -> ``[B,L,H*D]`` (full attention, no mask, scale 1/sqrt(D))."""
    cos, sin = pe
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    x = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)


class RMSNorm(nn.Module):
    """``(x * rsqrt(mean(x^2) + 1e-6))`` in fp32, cast to x's dtype, then times ``scale``."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q, k, v):
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x):
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """``lin(silu(vec))`` split into (shift, scale, gate) x (2 if double else 1)."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.n = 6 if double else 3
        self.lin = nn.Linear(dim, self.n * dim)

    def forward(self, vec):
        return self.lin(F.silu(vec))[:, None, :].chunk(self.n, dim=-1)


class SelfAttention(nn.Module):
    """Unfused q/k/v projections (``fused_qkv=False``), per-head QK RMSNorm, output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def qkv(self, x):
        B, L, _ = x.shape
        q, k, v = (p(x).view(B, L, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.norm(q, k, v)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


# Copied from vidprobe.nn.vit.Mlp (the checkpoint names the layers img_mlp.0 / img_mlp.2, a Sequential; tanh GELU)
def _mlp(dim: int, hidden: int) -> nn.Sequential:
    """``Linear(dim, hidden)``, tanh GELU, ``Linear(hidden, dim)``: :class:`vidprobe.nn.vit.Mlp` with ``approximate="tanh"``."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class DoubleStreamBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.img_mod = Modulation(dim, double=True)
        self.img_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(dim, num_heads, qkv_bias)
        self.img_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_mlp = _mlp(dim, hidden)
        self.txt_mod = Modulation(dim, double=True)
        self.txt_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(dim, num_heads, qkv_bias)
        self.txt_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = _mlp(dim, hidden)

    def forward(self, img, txt, vec, pe):
        i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2 = self.img_mod(vec)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(vec)
        iq, ik, iv = self.img_attn.qkv((1 + i_sc1) * self.img_norm1(img) + i_sh1)
        tq, tk, tv = self.txt_attn.qkv((1 + t_sc1) * self.txt_norm1(txt) + t_sh1)
        a = attention(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), pe)
        n_txt = txt.shape[1]
        t_a, i_a = a[:, :n_txt], a[:, n_txt:]
        img = img + i_g1 * self.img_attn.proj(i_a)
        img = img + i_g2 * self.img_mlp((1 + i_sc2) * self.img_norm2(img) + i_sh2)
        txt = txt + t_g1 * self.txt_attn.proj(t_a)
        txt = txt + t_g2 * self.txt_mlp((1 + t_sc2) * self.txt_norm2(txt) + t_sh2)
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP on the joint [txt, img] sequence; ``v`` fused with the MLP input (``v_mlp``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.mlp_hidden_dim = int(dim * mlp_ratio)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_mlp = nn.Linear(dim, dim + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(dim + self.mlp_hidden_dim, dim)
        self.norm = QKNorm(dim // num_heads)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = Modulation(dim, double=False)

    def forward(self, x, vec, pe):
        shift, scale, gate = self.modulation(vec)
        xm = (1 + scale) * self.pre_norm(x) + shift
        B, L, _ = xm.shape
        q = self.q_proj(xm).view(B, L, self.num_heads, -1)
        k = self.k_proj(xm).view(B, L, self.num_heads, -1)
        v, mlp = torch.split(self.v_mlp(xm), [self.dim, self.mlp_hidden_dim], dim=-1)
        v = v.reshape(B, L, self.num_heads, -1)
        q, k = self.norm(q, k, v)
        a = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), pe)
        return x + gate * self.linear2(torch.cat([a, F.gelu(mlp, approximate="tanh")], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None]) * self.norm_final(x) + shift[:, None])


class OpenSoraMMDiT(nn.Module):
    """Open-Sora 2.0's MMDiT with the official parameter names (see the module docstring).

    ``forward(img, img_ids, txt, txt_ids, timesteps, y_vec, cond)`` as the release:
    ``img [B,N,in_channels]`` packed latents, ``img_ids [B,N,3]``, ``txt
    [B,L,context_in_dim]``, ``txt_ids [B,L,3]``, ``timesteps [B]`` in [0,1],
    ``y_vec [B,vec_in_dim]``, ``cond [B,N,in_channels+patch^2]``; returns the
    velocity ``[B,N,in_channels]``.

    ``tap_points`` (length ``depth + depth_single_blocks``) are the modules
    whose forward output is the image-token stream after each block, in
    vidprobe layer order: the double blocks themselves (output ``(img, txt)``)
    and parameter-free identity taps that receive the image part of the joint
    sequence after each single block.
    """

    def __init__(self, config: MMDiTConfig | None = None):
        super().__init__()
        c = config or MMDiTConfig()
        if c.hidden_size % c.num_heads:
            raise ValueError(f"hidden_size {c.hidden_size} not divisible by num_heads {c.num_heads}")
        if sum(c.axes_dim) != c.hidden_size // c.num_heads:
            raise ValueError(f"axes_dim {c.axes_dim} must sum to the head dim {c.hidden_size // c.num_heads}")
        self.config = c
        d = c.hidden_size
        self.img_in = nn.Linear(c.in_channels, d)
        self.time_in = MLPEmbedder(256, d)
        self.vector_in = MLPEmbedder(c.vec_in_dim, d)
        self.cond_in = nn.Linear(c.in_channels + c.patch_size**2, d) if c.cond_embed else None
        self.txt_in = nn.Linear(c.context_in_dim, d)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(d, c.num_heads, c.mlp_ratio, c.qkv_bias) for _ in range(c.depth)
        )
        self.single_blocks = nn.ModuleList(SingleStreamBlock(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth_single_blocks))
        self.single_taps = nn.ModuleList(nn.Identity() for _ in range(c.depth_single_blocks))
        self.final_layer = LastLayer(d, c.in_channels)

    @property
    def tap_points(self) -> list[nn.Module]:
        return list(self.double_blocks) + list(self.single_taps)

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None):
        if img.dim() != 3 or txt.dim() != 3:
            raise ValueError("img and txt must be [B, L, C]")
        img = self.img_in(img)
        if self.cond_in is not None:
            if cond is None:
                raise ValueError("this model is image-conditioned (cond_embed): pass cond")
            img = img + self.cond_in(cond.to(img.dtype))
        vec = self.time_in(timestep_embedding(timesteps).to(img.dtype)) + self.vector_in(y_vec.to(img.dtype))
        txt = self.txt_in(txt.to(img.dtype))
        pe = rope_cos_sin(torch.cat([txt_ids, img_ids], dim=1), self.config.axes_dim, self.config.theta)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        n_txt = txt.shape[1]
        x = torch.cat([txt, img], dim=1)
        for block, tap in zip(self.single_blocks, self.single_taps):
            x = block(x, vec, pe)
            tap(x[:, n_txt:])
        return self.final_layer(x[:, n_txt:], vec)


def pack(x: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """``[B,C,T,H,W]`` -> ``[B, T*(H/p)*(W/p), C*p*p]`` (channel, then row, then column offset; the release's ``pack``)."""
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T, H // p, p, W // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(B, T * (H // p) * (W // p), C * p * p)


def unpack(x: torch.Tensor, T: int, h: int, w: int, p: int = PATCH) -> torch.Tensor:
    """Inverse of :func:`pack` for a ``T x h x w`` token grid."""
    B, _, D = x.shape
    C = D // (p * p)
    return x.reshape(B, T, h, w, C, p, p).permute(0, 4, 1, 2, 5, 3, 6).reshape(B, C, T, h * p, w * p)


def image_ids(T: int, h: int, w: int) -> torch.Tensor:
    """RoPE positions ``[1, T*h*w, 3]`` = (frame, row, column) of every token."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([t, y, x], dim=-1).reshape(1, -1, 3).float()


def official_key_shapes(config: MMDiTConfig | None = None) -> dict[str, list[int]]:
    """Names and shapes of the model's tensors (what ``state_dict()`` holds, in module order)."""
    with torch.device("meta"):
        m = OpenSoraMMDiT(config)
    return {k: list(v.shape) for k, v in m.state_dict().items()}


__all__ = [
    "PATCH", "MMDiTConfig", "OpenSoraMMDiT", "timestep_embedding", "rope_cos_sin", "apply_rope", "attention",
    "pack", "unpack", "image_ids", "official_key_shapes",
]
