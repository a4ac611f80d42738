"""The V-JEPA (2024) video ViT encoder, built from :mod:`vidprobe.nn`.

Parameter names are the official checkpoint's (``patch_embed.proj``,
``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}``, ``norm``; ``tests/fixtures/vjepa_official_keys.json``); numerics
are the study's release's (``tests/test_parity_vjepa.py``). Variants, loading
and the adapter are in :mod:`vidprobe.backbones.vjepa`.

``VJEPAEncoder(x [B, 3, T, H, W])`` -> ``[B, (T/2)(H/16)(W/16), D]``: tubelet
patch embedding + the fixed 3D sin-cos table (trilinearly interpolated from
the trained grid for other sizes), pre-norm blocks without LayerScale or
QK-norm, final LayerNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.nn.patch_embed import PatchEmbed
from vidprobe.nn.pos_embed import sincos_3d
from vidprobe.nn.vit import Block


class VJEPAEncoder(nn.Module):
    """The V-JEPA video ViT encoder (pre-norm blocks, fixed 3D sin-cos positions, final LayerNorm)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        uniform_power: bool = True,
        eps: float = 1e-6,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim = embed_dim
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, embed_dim, in_chans, tubelet_size=tubelet_size)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_eps=eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        if self.pos_embed.device.type != "meta":
            self._init_weights(uniform_power, init_std)

    @torch.no_grad()
    def _init_weights(self, uniform_power: bool, std: float) -> None:
        self.pos_embed.copy_(sincos_3d(self.embed_dim, *self.grid, uniform_power=uniform_power)[None])
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.blocks, start=1):  # depth-scaled residual projections
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def pos_embed_for(self, t: int, h: int, w: int) -> torch.Tensor:
        """Position table for a ``t x h x w`` token grid: trilinear from the trained grid."""
        if (t, h, w) == self.grid:
            return self.pos_embed
        T0, H0, W0 = self.grid
        table = self.pos_embed.reshape(1, T0, H0, W0, -1).permute(0, 4, 1, 2, 3)
        table = F.interpolate(table, size=(t, h, w), mode="trilinear", align_corners=False)
        return table.permute(0, 2, 3, 4, 1).reshape(1, t * h * w, -1)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        _, _, T, H, W = x.shape
        return T // self.tubelet_size, H // self.patch_size, W // self.patch_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,T,H,W]`` (normalised) -> tokens + positions ``[B, N, D]``."""
        return self.patch_embed(x) + self.pos_embed_for(*self.token_grid(x)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


__all__ = ["VJEPAEncoder"]
