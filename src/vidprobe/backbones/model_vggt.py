"""VGGT's network (without the tracking head), built from :mod:`vidprobe.nn`.

Parameter names and shapes are those of upstream's ``VGGT().state_dict()``
(facebookresearch/vggt; the official checkpoint ``facebook/VGGT-1B``, listed
in ``tests/fixtures/vggt_keys.json``); numerics are upstream's
(``tests/test_parity_vggt.py``). The adapter, the labeler and checkpoint
loading are in :mod:`vidprobe.backbones.vggt`, whose docstring describes the
architecture.

- :class:`DinoViT`: DINOv2 ViT with registers (``aggregator.patch_embed``);
- :class:`Aggregator`: camera / register tokens and the alternating frame /
  global blocks with 2D RoPE;
- :class:`VGGTDPTHead`: :class:`vidprobe.nn.dpt.DPTHead` on four aggregator
  blocks, frames in chunks of 8;
- the camera head is :class:`vidprobe.nn.camera_head.CameraHead`;
- :class:`VGGTModel`: all of them, ``forward(images)`` -> predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.backbones.common import IMAGENET_MEAN, IMAGENET_STD
from vidprobe.nn.camera_head import CameraHead
from vidprobe.nn.dpt import DPTHead
from vidprobe.nn.patch_embed import PatchEmbed
from vidprobe.nn.rope import RoPE2D, grid_positions
from vidprobe.nn.vit import Block


@dataclass(frozen=True)
class VGGTConfig:
    img_size: int = 518  # DINO position table covers img_size/patch squared
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    # DINOv2 patch embedder (ViT-L/14 + registers in VGGT-1B)
    dino_dim: int = 1024
    dino_depth: int = 24
    dino_heads: int = 16
    # heads
    camera_heads: int = 16
    camera_trunk_depth: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    input_width: int = 518  # frames are resized to this width


FULL = VGGTConfig()
# img_size 42: a 3x3 DINO position table, which 28-row frames (2 patch rows) shrink and 56-wide ones widen,
# as VGGT-1B's 37x37 table shrinks to 21 rows for 518x294 frames (the parity fixture runs 28x42 frames)
TINY = VGGTConfig(
    img_size=42, embed_dim=32, depth=4, num_heads=2, dino_dim=32, dino_depth=2, dino_heads=2, camera_heads=2,
    camera_trunk_depth=1, dpt_features=16, dpt_out_channels=(8, 16, 32, 32), dpt_layers=(0, 1, 2, 3), input_width=56,
)


# ------------------------------------------------------------------- DINOv2
class DinoViT(nn.Module):
    """DINOv2 ViT with registers; ``forward(x [N, 3, H, W])`` -> the final-normed patch tokens ``[N, h*w, C]``."""

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        C, p = cfg.dino_dim, cfg.patch_size
        self.patch_size = p
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = PatchEmbed(p, C)
        n = (cfg.img_size // p) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, C))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, C))
        self.mask_token = nn.Parameter(torch.zeros(1, C))  # unused at inference; in the checkpoint
        self.blocks = nn.ModuleList(
            [Block(C, cfg.dino_heads, 4.0, norm_eps=1e-6, init_values=1.0) for _ in range(cfg.dino_depth)]
        )
        self.norm = nn.LayerNorm(C, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def _pos(self, h: int, w: int, dtype) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if h * w == n and h == w:
            return self.pos_embed.to(dtype)
        m = int(math.isqrt(n))
        pe = self.pos_embed.float()
        patch = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pe[:, :1], patch], dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        t = self.patch_embed(x)
        # no casts: under autocast the bf16 patch tokens are promoted to the fp32 of the cls token /
        # position table / registers by torch.cat and +, as in upstream's DINOv2
        t = torch.cat([self.cls_token.expand(N, -1, -1), t], dim=1)
        t = t + self._pos(h, w, t.dtype)
        t = torch.cat([t[:, :1], self.register_tokens.expand(N, -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 1 + self.num_register_tokens:]


# --------------------------------------------------------------- aggregator
def _first_and_rest(tok: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """``[1, 2, X, C]`` -> ``[B*S, X, C]``: set 0 for the first frame, set 1 for the others."""
    first = tok[:, :1].expand(B, 1, *tok.shape[2:])
    rest = tok[:, 1:].expand(B, S - 1, *tok.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(B * S, *tok.shape[2:])


class Aggregator(nn.Module):
    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = DinoViT(cfg)
        self.rope = RoPE2D(cfg.rope_freq)  # upstream's numerics: float32 frequencies, angles in the tokens' dtype

        def block() -> Block:
            return Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, init_values=0.01, qk_norm=True, rope=self.rope)

        self.frame_blocks = nn.ModuleList([block() for _ in range(cfg.depth)])
        self.global_blocks = nn.ModuleList([block() for _ in range(cfg.depth)])
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, cfg.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, cfg.embed_dim) * 1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, stop_after: int | None = None) -> list[torch.Tensor]:
        """``images [B,S,3,H,W]`` in [0,1] -> ``[frame_k || global_k]`` for k = 1..stop_after, each ``[B,S,P,2C]``."""
        B, S, _, H, W = images.shape
        p = self.cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"VGGT: image size {H}x{W} is not a multiple of the patch size {p}")
        n_blocks = self.cfg.depth if stop_after is None else int(stop_after)
        if not 1 <= n_blocks <= self.cfg.depth:
            raise ValueError(f"VGGT: stop_after={stop_after} outside 1..{self.cfg.depth}")
        x = ((images - self._mean.to(images.dtype)) / self._std.to(images.dtype)).reshape(B * S, 3, H, W)
        patches = self.patch_embed(x)
        C = patches.shape[-1]
        tokens = torch.cat(  # no casts: torch.cat promotes, as upstream's aggregator does
            [_first_and_rest(self.camera_token, B, S), _first_and_rest(self.register_token, B, S), patches], dim=1
        )
        P = tokens.shape[1]
        # special tokens at (0, 0), patches at (row + 1, col + 1)
        pos = grid_positions(H // p, W // p, self.patch_start_idx, offset=1, device=images.device)
        pos = pos[None].expand(B * S, -1, -1)
        pos_global = pos.reshape(B, S * P, 2)
        out = []
        for i in range(n_blocks):
            tokens = self.frame_blocks[i](tokens.reshape(B * S, P, C), pos)
            frame = tokens.reshape(B, S, P, C)
            tokens = self.global_blocks[i](tokens.reshape(B, S * P, C), pos_global)
            out.append(torch.cat([frame, tokens.reshape(B, S, P, C)], dim=-1))
        return out


# ------------------------------------------------------------------- heads
class VGGTDPTHead(DPTHead):
    """VGGT's point / depth head: :class:`vidprobe.nn.dpt.DPTHead` as upstream configures it.

    Blocks ``cfg.dpt_layers`` of the aggregator, 32 last hidden channels,
    ``relu(x)`` skips (upstream's in-place ReLU), VGGT's float64 position
    embedding, frames decoded in chunks of ``chunk``.
    """

    def __init__(self, cfg: VGGTConfig, output_dim: int, activation: str):
        super().__init__(2 * cfg.embed_dim, output_dim, features=cfg.dpt_features, out_channels=cfg.dpt_out_channels,
                         last_hidden=32, activation=activation, conf_activation="expp1", pos_embed="float64",
                         skip_relu=True)
        self.patch_size = cfg.patch_size
        self.layers = tuple(cfg.dpt_layers)

    def forward(self, tokens_list: list[torch.Tensor], H: int, W: int, patch_start: int,
                chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Block outputs ``[B, S, P, 2C]`` -> ``(values [B, S, H, W, output_dim - 1], confidence [B, S, H, W])``."""
        B, S = tokens_list[0].shape[:2]
        grid = (H // self.patch_size, W // self.patch_size)
        vals, confs = [], []
        for a in range(0, S, chunk):
            n = min(a + chunk, S) - a
            maps = [tokens_list[li][:, a:a + n, patch_start:] for li in self.layers]
            val, conf = super().forward([t.reshape(B * n, -1, t.shape[-1]) for t in maps], grid, (H, W))
            vals.append(val.permute(0, 2, 3, 1).reshape(B, n, H, W, -1))
            confs.append(conf.reshape(B, n, H, W))
        return torch.cat(vals, 1), torch.cat(confs, 1)


class VGGTModel(nn.Module):
    """VGGT without the tracking head. ``forward(images [B,S,3,H,W] in [0,1])`` -> predictions dict."""

    def __init__(self, cfg: VGGTConfig = FULL):
        super().__init__()
        self.cfg = cfg
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(2 * cfg.embed_dim, cfg.camera_heads, depth=cfg.camera_trunk_depth, init_values=0.01)
        self.point_head = VGGTDPTHead(cfg, output_dim=4, activation="inv_log")
        self.depth_head = VGGTDPTHead(cfg, output_dim=2, activation="exp")

    def forward(self, images: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        if images.dim() == 4:
            images = images[None]
        H, W = images.shape[-2:]
        ctx = (torch.autocast(images.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else torch.autocast(images.device.type, enabled=False))
        with ctx:
            tokens = self.aggregator(images)
        tokens = [t.float() for t in tokens]  # heads in fp32 (upstream disables autocast around them)
        ps = self.aggregator.patch_start_idx
        pose = self.camera_head(tokens[-1][:, :, 0])  # the camera token of every frame, last block
        depth, depth_conf = self.depth_head(tokens, H, W, ps)
        pts, pts_conf = self.point_head(tokens, H, W, ps)
        return {"pose_enc": pose[-1], "pose_enc_list": pose, "depth": depth, "depth_conf": depth_conf,
                "world_points": pts, "world_points_conf": pts_conf}


__all__ = ["VGGTConfig", "FULL", "TINY", "DinoViT", "Aggregator", "VGGTDPTHead", "CameraHead", "VGGTModel"]
