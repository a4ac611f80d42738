"""VGGT-1B: a backbone (aggregator features) and the pseudo-label generator.

There is no installable ``vggt`` package on PyPI, so this is a compact own
implementation of the released architecture (facebookresearch/vggt,
``vggt/models/vggt.py``, ``aggregator.py``, ``heads/camera_head.py``,
``heads/dpt_head.py``). Parameter names and shapes are those of upstream's
``VGGT().state_dict()`` (the layout of the official checkpoint
``facebook/VGGT-1B``, ``model.safetensors`` or ``model.pt``; listed in
``tests/fixtures/vggt_keys.json``, generated from upstream), so it loads
strictly, except the tracking head (``track_head.*``), which vidprobe never
runs: those keys are dropped on load (:data:`DROPPED_PREFIXES`).

Parity: ``tests/test_parity_vggt.py`` runs this implementation at the
``TINY`` config with the weights of upstream's own ``VGGT`` (golden fixture
``tests/fixtures/parity/vggt.safetensors``, written by
``tools/parity/vggt.py``) and requires every DINO patch token, aggregator
block output, camera-head iteration, depth / point map and confidence to
agree to 1e-5 relative in fp32 (bit-identical on CPU with torch 2.13 when
the fixture was made), and the same under CPU bf16 autocast of the aggregator. The full-size numbers below
are upstream's constructor defaults; only names and shapes of the full size
are tested (the key fixture), its numerics are the same code at other sizes.

Architecture (full size):

* ``aggregator.patch_embed``: DINOv2 ViT-L/14 with 4 registers (img 518 ->
  37x37 position table, bicubic-interpolated with antialias to other grids;
  24 blocks, LayerNorm eps 1e-6); its final-normed patch tokens enter the
  aggregator. Under autocast the patch tokens are promoted to fp32 when the
  cls token / position table are added (as upstream's ``torch.cat`` and ``+``
  do).
* ``aggregator``: per frame one camera token and 4 register tokens (a first-
  frame set and a set for the other frames: ``camera_token [1,2,1,C]``,
  ``register_token [1,2,4,C]``), then 24 x (frame block, global block);
  blocks with QK-norm, LayerScale, 2D RoPE (base 100) on patch tokens
  (special tokens at position 0, patches at (row+1, col+1)). The output of
  block k is ``frame_k || global_k`` (2C = 2048 channels).
* ``camera_head``: the camera tokens of the last block through 4 trunk blocks
  with adaptive LayerNorm, 4 refinement iterations -> 9-d pose encoding
  ``[t, quat xyzw, fov_h, fov_w]`` (translation of the world->camera
  extrinsic, principal point at the image centre) -- the convention of
  :func:`vidprobe.geometry.encode_pose`, so no conversion (the labeler's
  cameras equal upstream's ``pose_encoding_to_extri_intri``: parity test).
* ``point_head`` / ``depth_head``: DPT heads on blocks 5, 12, 18, 24
  (0-based 4, 11, 17, 23); points with ``sign(x)(e^|x|-1)``, depth with
  ``exp``, confidences ``1 + e^x``. Each ``ResidualConvUnit`` adds ``relu(x)``
  as its skip (upstream's in-place ReLU overwrites ``x`` before the add; the
  VGGT-1B weights were trained with it). Heads run in fp32.

Input (both uses): frames in [0,1] resized like VGGT's
``load_and_preprocess_images`` (the release's copy, crop mode): width 518,
height ``round(H * 518 / W / 14) * 14`` with PIL bicubic on 8-bit frames (a
960x540 frame becomes 518x294), centre-cropped to 518 rows if taller
(:func:`preprocess`; pinned by the parity test). The model normalises with the
ImageNet mean/std itself.

Backbone features: layer k (1..24) = the patch tokens of ``frame_k ||
global_k`` as ``[S, h, w, 2048]`` (one map per frame, all frames in one
pass); layer -1 = layer 24 (the aggregator has no final norm). The pass stops
after the deepest requested block.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.backbones.base import BackboneSpec, FeatureSet, register
from vidprobe.backbones.common import (
    both_or_neither,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAST,
    check_timesteps,
    check_video,
    per_frame_index,
    resolve_device,
    resolve_dtype,
    resolve_layers,
    seeded,
)
from vidprobe.backbones.vit3d import Block, Mlp, RoPE2D, grid_positions, load_into, load_state_dict_file, resolve_checkpoint

MODEL_ID = "facebook/VGGT-1B"
DROPPED_PREFIXES = ("track_head.",)


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
class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """DINOv2 ViT with registers; ``forward`` returns the final-normed patch tokens ``[N, h*w, C]``."""

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        C, p = cfg.dino_dim, cfg.patch_size
        self.patch_size = p
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = _PatchEmbed(p, C)
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
        self.rope = RoPE2D(cfg.rope_freq)

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
        pos = grid_positions(B * S, H // p, W // p, images.device) + 1
        pos = torch.cat([torch.zeros(B * S, self.patch_start_idx, 2, dtype=pos.dtype, device=pos.device), pos], 1)
        pos_global = pos.reshape(B, S * P, 2)
        out = []
        for i in range(n_blocks):
            tokens = self.frame_blocks[i](tokens.reshape(B * S, P, C), pos)
            frame = tokens.reshape(B, S, P, C)
            tokens = self.global_blocks[i](tokens.reshape(B, S * P, C), pos_global)
            out.append(torch.cat([frame, tokens.reshape(B, S, P, C)], dim=-1))
        return out


# ------------------------------------------------------------------- heads
class CameraHead(nn.Module):
    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        d = 2 * cfg.embed_dim
        self.trunk = nn.Sequential(*[Block(d, cfg.camera_heads, 4.0, init_values=0.01) for _ in range(cfg.camera_trunk_depth)])
        self.token_norm = nn.LayerNorm(d)
        self.trunk_norm = nn.LayerNorm(d)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, d)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * d))
        self.adaln_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(d, d // 2, 9)

    def forward(self, tokens_list: list[torch.Tensor], num_iterations: int = 4) -> list[torch.Tensor]:
        cam = self.token_norm(tokens_list[-1][:, :, 0])  # [B, S, 2C]
        B, S, _ = cam.shape
        pred = None
        outs = []
        for _ in range(num_iterations):
            inp = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1) if pred is None else pred.detach())
            shift, scale, gate = self.poseLN_modulation(inp).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(cam) * (1 + scale) + shift) + cam
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            pred = delta if pred is None else pred + delta
            outs.append(torch.cat([pred[..., :7], F.relu(pred[..., 7:])], dim=-1))  # t, quat linear; fov relu
        return outs


class _ResidualConvUnit(nn.Module):
    def __init__(self, f: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream's unit holds nn.ReLU(inplace=True): its first activation overwrites x, so the skip
        # adds relu(x), not x. VGGT-1B's heads were trained that way (pinned by tests/test_parity_vggt.py).
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class _FusionBlock(nn.Module):
    def __init__(self, f: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(f, f, 1)
        if has_residual:
            self.resConfUnit1 = _ResidualConvUnit(f)
        self.has_residual = has_residual
        self.resConfUnit2 = _ResidualConvUnit(f)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


def _sincos(dim: int, pos: torch.Tensor, omega0: float = 100.0) -> torch.Tensor:
    omega = 1.0 / omega0 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    out = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def _uv_pos_embed(C: int, h: int, w: int, aspect: float, device, dtype) -> torch.Tensor:
    """VGGT's DPT position embedding ``[C, h, w]``: sin/cos of a diagonal-normalised uv grid, times 0.1."""
    diag = (aspect ** 2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, device=device, dtype=dtype)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, device=device, dtype=dtype)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # [h, w]
    emb = torch.cat([_sincos(C // 2, uu.reshape(-1)), _sincos(C // 2, vv.reshape(-1))], dim=-1)
    return (emb.view(h, w, C) * 0.1).permute(2, 0, 1).to(dtype)


class DPTHead(nn.Module):
    def __init__(self, cfg: VGGTConfig, output_dim: int, activation: str):
        super().__init__()
        d, f, oc = 2 * cfg.embed_dim, cfg.dpt_features, cfg.dpt_out_channels
        self.patch_size = cfg.patch_size
        self.layers = tuple(cfg.dpt_layers)
        self.activation = activation
        self.norm = nn.LayerNorm(d)
        self.projects = nn.ModuleList([nn.Conv2d(d, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        s = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(s, f"layer{i}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        s.refinenet1 = _FusionBlock(f)
        s.refinenet2 = _FusionBlock(f)
        s.refinenet3 = _FusionBlock(f)
        s.refinenet4 = _FusionBlock(f, has_residual=False)
        s.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        s.output_conv2 = nn.Sequential(nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1))
        self.scratch = s

    def _one_chunk(self, tokens_list, H: int, W: int, start: int, stop: int, patch_start: int):
        ph, pw = H // self.patch_size, W // self.patch_size
        feats = []
        for i, li in enumerate(self.layers):
            x = tokens_list[li][:, start:stop, patch_start:]
            B, S = x.shape[:2]
            x = self.norm(x.reshape(B * S, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(B * S, -1, ph, pw)
            x = self.projects[i](x)
            x = x + _uv_pos_embed(x.shape[1], ph, pw, W / H, x.device, x.dtype)
            feats.append(self.resize_layers[i](x))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(t) for i, t in enumerate(feats, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.output_conv1(s.refinenet1(out, l1))
        out = F.interpolate(out, size=(ph * self.patch_size, pw * self.patch_size), mode="bilinear", align_corners=True)
        out = out + _uv_pos_embed(out.shape[1], out.shape[2], out.shape[3], W / H, out.device, out.dtype)
        out = s.output_conv2(out).permute(0, 2, 3, 1)  # [B*S, H, W, out]
        val, conf = out[..., :-1], 1 + out[..., -1].exp()
        if self.activation == "exp":
            val = val.exp()
        else:  # inv_log
            val = torch.sign(val) * torch.expm1(val.abs())
        return val.reshape(B, S, *val.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

    def forward(self, tokens_list, H: int, W: int, patch_start: int, chunk: int = 8):
        S = tokens_list[0].shape[1]
        parts = [self._one_chunk(tokens_list, H, W, a, min(a + chunk, S), patch_start) for a in range(0, S, chunk)]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


class VGGTModel(nn.Module):
    """VGGT without the tracking head. ``forward(images [B,S,3,H,W] in [0,1])`` -> predictions dict."""

    def __init__(self, cfg: VGGTConfig = FULL):
        super().__init__()
        self.cfg = cfg
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(cfg)
        self.point_head = DPTHead(cfg, output_dim=4, activation="inv_log")
        self.depth_head = DPTHead(cfg, output_dim=2, activation="exp")

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
        pose = self.camera_head(tokens)
        depth, depth_conf = self.depth_head(tokens, H, W, ps)
        pts, pts_conf = self.point_head(tokens, H, W, ps)
        return {"pose_enc": pose[-1], "pose_enc_list": pose, "depth": depth, "depth_conf": depth_conf,
                "world_points": pts, "world_points_conf": pts_conf}


# ----------------------------------------------------------------- loading
def build_model(
    model_id: str | None = MODEL_ID,
    revision: str | None = None,
    tiny: bool = False,
    random_init: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    config: VGGTConfig | None = None,
) -> VGGTModel:
    """The released VGGT-1B from a hub id / local dir / file, or a seeded random model (``tiny`` for tests)."""
    cfg = config or (TINY if tiny else FULL)
    dev = resolve_device(device)
    with seeded(seed):
        model = VGGTModel(cfg)
    if not (tiny or random_init):
        if not model_id:
            raise ValueError("VGGT: no model_id (hub id or local path) to load")
        path = resolve_checkpoint(model_id, revision)
        load_into(model, load_state_dict_file(path), DROPPED_PREFIXES, where=str(path))
    model = model.to(dev).eval()
    model.requires_grad_(False)
    return model


def vggt_input_hw(hw: tuple[int, int], width: int = 518, patch: int = 14) -> tuple[tuple[int, int], int]:
    """``((resize_h, width), crop_h)``: VGGT "crop" preprocessing of an ``H x W`` frame."""
    H, W = hw
    new_h = max(patch, int(round(H * (width / W) / patch)) * patch)
    return (new_h, width), min(new_h, width)


def preprocess(video: torch.Tensor, width: int = 518, patch: int = 14) -> torch.Tensor:
    """``[T,3,H,W]`` in [0,1] -> ``[T,3,h,width]`` in [0,1]: VGGT's ``load_and_preprocess_images`` (crop mode).

    Each frame is resized as 8-bit RGB with ``PIL.Image.resize(..., BICUBIC)``
    to ``width x round(H * width / W / patch) * patch`` and read back as
    ``uint8 / 255`` (kernel ``pil-bicubic`` of :mod:`vidprobe.backbones.resize`),
    then centre-cropped to ``width`` rows when taller (top row
    ``(h - width) // 2``). A frame already at that size is left as it is.
    Matches the release's function exactly on 8-bit frames (pinned by
    ``tests/test_parity_vggt.py``).
    """
    from vidprobe.backbones.resize import resize_video

    (rh, rw), ch = vggt_input_hw(tuple(video.shape[-2:]), width, patch)
    x = resize_video(video.float(), (rh, rw), "pil-bicubic")
    if rh > ch:
        top = (rh - ch) // 2
        x = x[..., top:top + ch, :]
    return x


# ---------------------------------------------------------------- backbone
class VGGTBackbone:
    def __init__(self, spec: BackboneSpec, model: VGGTModel, device: torch.device, dtype: torch.dtype,
                 model_id: str | None, height: int | None = None, width: int | None = None):
        self.spec = spec
        self.model = model
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.fixed_hw = (int(height), int(width)) if height is not None and width is not None else None
        p = model.cfg.patch_size
        if self.fixed_hw and (self.fixed_hw[0] % p or self.fixed_hw[1] % p):
            raise ValueError(f"{spec.name}: height/width {self.fixed_hw} must be multiples of the patch size {p}")

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """VGGT's crop preprocessing, or a plain bicubic resize to the fixed ``height x width`` when given."""
        cfg = self.model.cfg
        if self.fixed_hw is None:
            return preprocess(video, cfg.input_width, cfg.patch_size)
        x = video.float()
        if tuple(x.shape[-2:]) != self.fixed_hw:
            x = F.interpolate(x, size=self.fixed_hw, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return x

    @property
    def num_layers(self) -> int:
        return self.model.cfg.depth

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        who = self.spec.name
        check_video(video, who)
        check_timesteps(timesteps, who)
        resolved = resolve_layers(layers, self.num_layers, who)
        cfg = self.model.cfg
        x = self.preprocess(video).to(self.device)
        H, W = x.shape[-2:]
        h, w = H // cfg.patch_size, W // cfg.patch_size
        deepest = max(b for _, b in resolved)
        autocast = self.dtype if self.device.type == "cuda" and self.dtype != torch.float32 else None
        ctx = torch.autocast("cuda", dtype=autocast) if autocast is not None else torch.autocast(self.device.type, enabled=False)
        with ctx:
            outs = self.model.aggregator(x[None], stop_after=deepest)
        ps = self.model.aggregator.patch_start_idx
        maps = {}
        for req, b in resolved:
            t = outs[b - 1][0, :, ps:]
            maps[(req, None)] = t.reshape(t.shape[0], h, w, t.shape[-1]).float().cpu()
        info = {"input_hw": (int(H), int(W)), "grid": (h, w), "layout": self.spec.frame_layout, "model_id": self.model_id,
                "resize": f"width {cfg.input_width}, height round(H*{cfg.input_width}/W/14)*14, centre crop <= {cfg.input_width}"}
        return FeatureSet(maps=maps, frame_index=per_frame_index(video.shape[0]), info=info)


def build(
    spec: BackboneSpec,
    model_id: str | None = None,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    tiny: bool = False,
    random_init: bool = False,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    config_overrides: dict | None = None,
) -> VGGTBackbone:
    """VGGT-1B aggregator as a backbone; ``height``/``width`` replace VGGT's own resize with a fixed size."""
    both_or_neither(height, width, spec.name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    mid = model_id or spec.model_id
    cfg = replace(TINY if tiny else FULL, **(config_overrides or {}))
    model = build_model(mid, revision, random_init=tiny or random_init, seed=seed, device=dev, config=cfg)
    return VGGTBackbone(spec, model, dev, dt, None if (tiny or random_init) else mid, height=height, width=width)


# ----------------------------------------------------------------- labeler
class VGGTLabeler:
    """Pseudo ground truth for all frames of a window in ONE VGGT pass.

    ``__call__(video [T,3,H,W] in [0,1])`` returns ``points [T,h,w,3]``,
    ``depth [T,h,w]``, ``confidence [T,h,w]`` (depth confidence, >= 1),
    ``valid [T,h,w]``, ``intrinsics [T,3,3]``, ``extrinsics [T,3,4]`` at VGGT's
    input resolution (see :func:`preprocess`). Cameras come from the camera
    head's last iteration via :func:`vidprobe.geometry.decode_pose` (equal to
    upstream's ``pose_encoding_to_extri_intri``, which the release uses;
    fovs are clamped to [1e-4, pi - 1e-4] so a degenerate prediction cannot
    give an infinite or negative focal -- the release does not clamp).
    ``points_from="depth"`` (default) writes the depth map unprojected with
    the predicted cameras -- the release's stored ``pointmaps``
    (``unproject_depth_map_to_point_map``; equal to it in the parity test) --
    so depth, cameras and points are exactly consistent; ``"point_head"``
    writes the point head's world points instead (VGGT's world = the frame-0
    camera). ``confidence`` is ``depth_conf``, the release's ``confmaps``.
    ``valid`` marks finite, positive depth (where it is not, depth is set to
    0; the release stores depth as predicted).
    """

    name = "vggt"

    def __init__(self, model: VGGTModel, device: torch.device, autocast_dtype: torch.dtype | None,
                 points_from: str = "depth", model_id: str | None = None):
        if points_from not in ("point_head", "depth"):
            raise ValueError(f"VGGTLabeler: points_from must be 'point_head' or 'depth', got {points_from!r}")
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.points_from = points_from
        self.model_id = model_id

    def meta(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {"labeler": "vggt", "model_id": self.model_id or "random-init", "points_from": self.points_from,
                "confidence": "depth_conf", "input_width": cfg.input_width,
                "resize": "vggt crop: width W', height round(H*W'/W/14)*14 (PIL bicubic, 8-bit), "
                          "centre crop to W' rows"}

    @torch.inference_mode()
    def __call__(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        from vidprobe.geometry import decode_pose, depth_to_world_points

        check_video(video, "vggt labeler")
        cfg = self.model.cfg
        x = preprocess(video, cfg.input_width, cfg.patch_size).to(self.device)
        H, W = x.shape[-2:]
        pred = self.model(x[None], autocast_dtype=self.autocast_dtype)
        pose = pred["pose_enc"][0].float().cpu().clone()
        pose[..., 7:] = pose[..., 7:].clamp(1e-4, math.pi - 1e-4)
        ext, K = decode_pose(pose.double(), (int(H), int(W)))
        ext, K = ext.float(), K.float()
        depth = pred["depth"][0, ..., 0].float().cpu()
        conf = pred["depth_conf"][0].float().cpu()
        valid = torch.isfinite(depth) & (depth > 0)
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        if self.points_from == "depth":
            points = depth_to_world_points(depth.double(), K.double(), ext.double()).float()
        else:
            points = pred["world_points"][0].float().cpu()
        return {"points": points, "depth": depth, "confidence": conf, "valid": valid, "intrinsics": K, "extrinsics": ext}


def build_labeler(
    model_id: str | None = MODEL_ID,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tiny: bool = False,
    seed: int = 0,
    points_from: str = "depth",
) -> VGGTLabeler:
    """VGGT-1B labeler; ``tiny`` = random tiny model.

    On CUDA the aggregator runs under ``dtype`` autocast (default bf16, as the
    release's ``torch.amp.autocast("cuda", dtype=torch.bfloat16)``) and the
    heads in fp32 (upstream's ``VGGT.forward`` disables autocast around them);
    on CPU everything is fp32.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = build_model(model_id, revision, tiny=tiny, seed=seed, device=dev)
    autocast = dt if (dev.type == "cuda" and dt != torch.float32) else None
    return VGGTLabeler(model, dev, autocast, points_from, None if tiny else model_id)


def _register() -> None:
    spec = BackboneSpec(
        name="vggt-1b",
        family="vggt",
        model_id=MODEL_ID,
        num_layers=FULL.depth,
        default_layer=LAST,
        input_hw=(294, 518),
        num_frames=None,
        frame_layout="per-frame (all frames in one pass)",
        extras=None,
        description="VGGT-1B aggregator: frame||global tokens of an AA block, C=2048, 518 wide (own implementation)",
    )
    register(spec, functools.partial(build, spec))


_register()

__all__ = [
    "VGGTConfig", "FULL", "TINY", "VGGTModel", "Aggregator", "DinoViT", "CameraHead", "DPTHead",
    "build_model", "build", "build_labeler", "VGGTLabeler", "VGGTBackbone", "preprocess", "vggt_input_hw",
    "DROPPED_PREFIXES", "MODEL_ID",
]
