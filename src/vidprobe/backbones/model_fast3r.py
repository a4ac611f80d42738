"""Fast3R's network (encoder + fusion transformer), built from :mod:`vidprobe.nn`.

Parameter names and shapes are those of the checkpoint
``jedyang97/Fast3R_ViT_Large_512`` (``tests/fixtures/fast3r_keys.json``);
numerics are the study's release's (``tests/test_parity_fast3r.py``). The
adapter and checkpoint loading are in :mod:`vidprobe.backbones.fast3r`, whose
docstring describes the architecture.

- :class:`CroCoEncoder`: CroCo ViT (patch 16) with 2D RoPE on (row, column);
- :class:`Fast3RDecoder`: the fusion transformer's parameters and the views'
  image-index draw;
- :class:`Fast3RNet`: both; ``forward(frames)`` -> encoder output, raw block
  outputs, ``dec_norm`` of the last block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidprobe.nn import pos_embed
from vidprobe.nn.patch_embed import PatchEmbed
from vidprobe.nn.rope import RoPE2D, grid_positions
from vidprobe.nn.vit import Block


@dataclass(frozen=True)
class Fast3RConfig:
    patch_size: int = 16
    enc_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    dec_dim: int = 1024
    dec_depth: int = 24
    dec_heads: int = 16
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0
    random_image_idx_embedding: bool = True
    attn_bias_for_inference: bool = False
    max_image_idx: int = 1000
    input_long_side: int = 512


FULL = Fast3RConfig()
TINY = Fast3RConfig(enc_dim=32, enc_depth=2, enc_heads=2, dec_dim=32, dec_depth=3, dec_heads=2, input_long_side=64)


def sincos_1d(dim: int, n: int) -> torch.Tensor:
    """``[n, dim]`` float32 table of positions ``0..n-1``: :func:`vidprobe.nn.pos_embed.sincos_1d` (MAE's 1D table)."""
    return pos_embed.sincos_1d(dim, torch.arange(n)).float()


class CroCoEncoder(nn.Module):
    def __init__(self, cfg: Fast3RConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.enc_dim)
        self.rope = RoPE2D(cfg.rope_freq)  # croco's numerics: float32 frequencies, angles in the tokens' dtype
        self.enc_blocks = nn.ModuleList(
            [Block(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, norm_eps=1e-6, rope=self.rope) for _ in range(cfg.enc_depth)]
        )
        self.enc_norm = nn.LayerNorm(cfg.enc_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        t = self.patch_embed(x)
        pos = grid_positions(H // self.patch_size, W // self.patch_size, device=x.device)[None].expand(N, -1, -1)
        for blk in self.enc_blocks:
            t = blk(t, pos)
        return self.enc_norm(t)


class Fast3RDecoder(nn.Module):
    def __init__(self, cfg: Fast3RConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder_embed = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        scale = None
        if cfg.attn_bias_for_inference:  # upstream: longer-sequence attention temperature at inference
            scale = (cfg.dec_dim // cfg.dec_heads) ** -0.5 * (math.log(137) / math.log(20)) ** 0.5
        self.dec_blocks = nn.ModuleList(
            [Block(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, norm_eps=1e-5, attn_scale=scale) for _ in range(cfg.dec_depth)]
        )
        self.dec_norm = nn.LayerNorm(cfg.dec_dim, eps=1e-6)
        self.register_buffer("image_idx_emb", sincos_1d(cfg.dec_dim, cfg.max_image_idx), persistent=False)

    def image_ids(self, num_views: int, generator: torch.Generator | None) -> torch.Tensor:
        if not self.cfg.random_image_idx_embedding:
            return torch.arange(num_views)
        top = self.cfg.max_image_idx - 1
        if num_views - 1 > top:
            raise ValueError(f"Fast3R: at most {top + 1} views per pass, got {num_views}")
        ids = torch.zeros(num_views, dtype=torch.long)
        ids[1:] = torch.randperm(top, generator=generator)[: num_views - 1] + 1
        return ids


class Fast3RNet(nn.Module):
    """Encoder + fusion transformer of Fast3R (checkpoint names ``encoder.*``, ``decoder.*``)."""

    def __init__(self, cfg: Fast3RConfig = FULL):
        super().__init__()
        self.cfg = cfg
        self.encoder = CroCoEncoder(cfg)
        self.decoder = Fast3RDecoder(cfg)

    def forward(self, frames: torch.Tensor, stop_after: int | None = None, seed: int = 0,
                encoder_chunk: int = 32, image_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """``frames [N,3,H,W]`` (normalised) -> ``{"encoder": [N,P,Ce], "blocks": [raw block k outputs
        [N,P,Cd] for k=1..stop_after], "final": dec_norm(block L) or None when stopped early, "image_ids": [N]}``.

        ``image_ids [N]`` (optional) replaces the seeded draw of the views' image indices.
        """
        N = frames.shape[0]
        n_blocks = self.cfg.dec_depth if stop_after is None else int(stop_after)
        if not 1 <= n_blocks <= self.cfg.dec_depth:
            raise ValueError(f"Fast3R: stop_after={stop_after} outside 1..{self.cfg.dec_depth}")
        enc = torch.cat([self.encoder(c) for c in frames.split(encoder_chunk)])
        P = enc.shape[1]
        if image_ids is None:
            ids = self.decoder.image_ids(N, torch.Generator().manual_seed(int(seed)))
        else:
            ids = torch.as_tensor(image_ids, dtype=torch.long).reshape(-1)
            if ids.numel() != N or int(ids.min()) < 0 or int(ids.max()) >= self.cfg.max_image_idx:
                raise ValueError(f"Fast3R: image_ids must be {N} indices in 0..{self.cfg.max_image_idx - 1}, "
                                 f"got {ids.tolist()}")
        img_pos = self.decoder.image_idx_emb[ids.to(frames.device)]  # [N, Cd] fp32
        x = self.decoder.decoder_embed(enc.reshape(1, N * P, -1))
        # added in place: the residual stream keeps decoder_embed's dtype (bf16 under autocast)
        x += img_pos[:, None, :].expand(N, P, -1).reshape(1, N * P, -1)
        blocks = []
        for i in range(n_blocks):
            x = self.decoder.dec_blocks[i](x)
            blocks.append(x.reshape(N, P, -1))
        final = self.decoder.dec_norm(x).reshape(N, P, -1) if n_blocks == self.cfg.dec_depth else None
        return {"encoder": enc, "blocks": blocks, "final": final, "image_ids": ids.cpu()}

    def reference_outputs(self, frames: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
        """The upstream decoder's output list: [encoder, block 1, ..., block L-1, dec_norm(block L)]."""
        out = self.forward(frames, seed=seed)
        return [out["encoder"], *out["blocks"][:-1], out["final"]]


__all__ = ["Fast3RConfig", "FULL", "TINY", "CroCoEncoder", "Fast3RDecoder", "Fast3RNet", "sincos_1d"]
