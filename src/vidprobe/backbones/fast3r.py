"""Fast3R (ViT-L 512): all frames in one multi-view pass; fused features of the fusion transformer.

There is no installable ``fast3r`` package on PyPI, so this is a compact own
implementation of the released model's encoder and fusion transformer
(facebookresearch/fast3r, ``fast3r/models/fast3r.py``: ``CroCoEncoder`` and
``Fast3RDecoder``), with the parameter names and shapes of the checkpoint
``jedyang97/Fast3R_ViT_Large_512`` (``model.safetensors``). The DPT heads
(``downstream_head.*``, ``downstream_head_local.*``) are not needed for
features and are dropped on load (:data:`DROPPED_PREFIXES`).

Released configuration (its ``config.json``): encoder CroCo ViT-L/16
(``PatchEmbedDust3R``, 24 blocks, 1024-d, 16 heads, RoPE base 100, LayerNorm
eps 1e-6); fusion transformer ("decoder") 24 blocks, 1024-d, 16 heads, no
RoPE, LayerNorm eps 1e-5 in the blocks and 1e-6 in ``dec_norm``,
``random_image_idx_embedding: true``, ``attn_bias_for_inference_enabled:
false`` (these config.json values are not checked here: no checkpoint is
available offline). Each view's tokens get a 1D sin/cos "image index"
embedding (base 10000, 1000 indices); with the random variant, view 0 gets
index 0 and the other views distinct random indices in 1..999, drawn as
``randperm(999, generator)[:V-1] + 1``. The study's release (Fast3R's
``Fast3RDecoder._get_random_image_pos``) seeds that generator on every
forward from the unseeded global RNG, so its indices differ from video to
video and run to run; here the generator is seeded with ``seed`` (the same
draw for every video of a given view count), so features are reproducible.
With the same generator seed both draw the same indices
(``tests/test_parity_fast3r.py``); ``image_ids`` pins them outright.

**Feature index 24.** The fusion transformer returns a list of 25 tensors:
index 0 is the encoder output (before ``decoder_embed``), index k (1..24) the
output of fusion block k, where the last entry is replaced by
``dec_norm(block 24)``; the DPT head reads indices (0, 12, 18, 24). The
reference's "feature index 24" is therefore the final, normed fused
feature -- layer ``-1`` in vidprobe's convention (layer k in 1..24 is the raw
output of fusion block k). Grid at 512x288: 18 x 32, C = 1024. Both readings
are checked against the release's decoder list in ``tests/test_parity_fast3r.py``.

Input: frames in [0,1], long side resized to 512 and the short side to the
nearest multiple of 16 (a 960x540 frame becomes 512x288, the reference
size), or to a fixed ``height`` x ``width``; ``resize`` names the kernel
(default ``bicubic``: torch, antialiased). The study's release reads each
frame file with PIL and resizes it with LANCZOS straight to 512x288
(``resize="pil-lanczos"``, ``height=288, width=512``), then normalises to
[-1, 1] (mean = std = 0.5), as here (parity test). It runs every frame of the
window in one pass (81 on CO3D, 150 on DL3DV) under bf16 autocast.
Layout: per frame (map t serves frame t), all frames in one pass.

Precision under bf16 autocast (CUDA only here; the parity fixture is fp32, so
none of this is tested): the image-index embedding is added in place, so the
decoder's residual stream stays in ``decoder_embed``'s bf16 (the release's
code reads ``x += image_pos``); RoPE runs on bf16 q/k with angles rounded to
bf16, which is croco's plain-PyTorch ``RoPE2D``; croco's CUDA ``curope``
kernel, if the study built it, computes the angles in fp32 (unknown which ran).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from vidprobe.backbones.base import BackboneSpec, FeatureSet, register
from vidprobe.backbones.common import (
    both_or_neither,
    LAST,
    check_kernel,
    check_timesteps,
    check_video,
    normalize,
    per_frame_index,
    resolve_device,
    resolve_dtype,
    resolve_layers,
    resize_video,
    seeded,
)
from vidprobe.backbones.vit3d import Block, RoPE2D, grid_positions, load_into, load_state_dict_file, resolve_checkpoint

MODEL_ID = "jedyang97/Fast3R_ViT_Large_512"
DROPPED_PREFIXES = ("downstream_head.", "downstream_head_local.")
REFERENCE_INDEX = 24  # the reference's feature index (= vidprobe layer -1 for the 24-block fusion transformer)


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
    """``[n, dim]``: ``[sin(p w), cos(p w)]`` with ``w_i = 10000^(-2i/dim)`` (MAE's 1D table)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class CroCoEncoder(nn.Module):
    def __init__(self, cfg: Fast3RConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patch_embed = _PatchEmbed(cfg.patch_size, cfg.enc_dim)
        self.rope = RoPE2D(cfg.rope_freq)
        self.enc_blocks = nn.ModuleList(
            [Block(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, norm_eps=1e-6, rope=self.rope) for _ in range(cfg.enc_depth)]
        )
        self.enc_norm = nn.LayerNorm(cfg.enc_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        t = self.patch_embed(x)
        pos = grid_positions(N, H // self.patch_size, W // self.patch_size, x.device)
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


def build_model(model_id: str | None = MODEL_ID, revision: str | None = None, tiny: bool = False,
                random_init: bool = False, seed: int = 0, device: str | torch.device | None = None,
                config: Fast3RConfig | None = None) -> Fast3RNet:
    """Fast3R ViT-L 512 from a hub id / local dir / file, or a seeded random model (``tiny`` for tests)."""
    cfg = config or (TINY if tiny else FULL)
    with seeded(seed):
        model = Fast3RNet(cfg)
    if not (tiny or random_init):
        if not model_id:
            raise ValueError("Fast3R: no model_id (hub id or local path) to load")
        path = resolve_checkpoint(model_id, revision)
        load_into(model, load_state_dict_file(path), DROPPED_PREFIXES, where=str(path))
    model = model.to(resolve_device(device)).eval()
    model.requires_grad_(False)
    return model


def input_hw(hw: tuple[int, int], long_side: int = 512, patch: int = 16) -> tuple[int, int]:
    """Long side -> ``long_side``, short side -> nearest multiple of ``patch`` (960x540 -> 512x288)."""
    H, W = hw
    if W >= H:
        return max(patch, int(round(H * long_side / W / patch)) * patch), long_side
    return long_side, max(patch, int(round(W * long_side / H / patch)) * patch)


class Fast3RBackbone:
    def __init__(self, spec: BackboneSpec, model: Fast3RNet, device: torch.device, dtype: torch.dtype,
                 model_id: str | None, seed: int = 0, height: int | None = None, width: int | None = None,
                 resize: str = "bicubic", image_ids: torch.Tensor | None = None):
        self.spec = spec
        self.model = model
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.seed = int(seed)
        self.fixed_hw = (height, width) if height is not None and width is not None else None
        self.resize = check_kernel(resize, spec.name)
        self.image_ids = image_ids  # pins the views' image indices (tests); None: drawn from ``seed``

    @property
    def num_layers(self) -> int:
        return self.model.cfg.dec_depth

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``[T,3,H,W]`` in [0,1] -> ``[T,3,h,w]`` resized with ``resize``, normalised to [-1, 1]."""
        cfg = self.model.cfg
        hw = self.fixed_hw or input_hw(tuple(video.shape[-2:]), cfg.input_long_side, cfg.patch_size)
        if hw[0] % cfg.patch_size or hw[1] % cfg.patch_size:
            raise ValueError(f"{self.spec.name}: input size {hw} must be a multiple of {cfg.patch_size}")
        x = resize_video(video.to(self.device, torch.float32), tuple(hw), self.resize)
        return normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        who = self.spec.name
        check_video(video, who)
        check_timesteps(timesteps, who)
        resolved = resolve_layers(layers, self.num_layers, who)
        x = self.preprocess(video)
        H, W = x.shape[-2:]
        p = self.model.cfg.patch_size
        h, w = H // p, W // p
        deepest = max(b for _, b in resolved)
        use_ac = self.device.type == "cuda" and self.dtype != torch.float32
        ctx = torch.autocast("cuda", dtype=self.dtype) if use_ac else torch.autocast(self.device.type, enabled=False)
        with ctx:
            out = self.model(x, stop_after=deepest, seed=self.seed, image_ids=self.image_ids)
        maps = {}
        for req, b in resolved:
            t = out["final"] if req == LAST else out["blocks"][b - 1]
            maps[(req, None)] = t.reshape(t.shape[0], h, w, t.shape[-1]).float().cpu()
        info = {"input_hw": (int(H), int(W)), "grid": (h, w), "layout": self.spec.frame_layout, "model_id": self.model_id,
                "seed": self.seed, "image_ids": out["image_ids"].tolist(), "resize": self.resize,
                "last_is_reference_index_24": any(r == LAST for r, _ in resolved)}
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
    resize: str = "bicubic",
) -> Fast3RBackbone:
    """Fast3R as a backbone; ``height``/``width`` (multiples of 16) replace the long-side-512 resize.

    ``resize``: frame resize kernel (:mod:`vidprobe.backbones.resize`; the study's release: ``pil-lanczos``).
    """
    both_or_neither(height, width, spec.name)
    check_kernel(resize, spec.name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    mid = model_id or spec.model_id
    cfg = replace(TINY if tiny else FULL, **(config_overrides or {}))
    model = build_model(mid, revision, random_init=tiny or random_init, seed=seed, device=dev, config=cfg)
    return Fast3RBackbone(spec, model, dev, dt, None if (tiny or random_init) else mid, seed=seed,
                          height=height, width=width, resize=resize)


def _register() -> None:
    spec = BackboneSpec(
        name="fast3r",
        family="fast3r",
        model_id=MODEL_ID,
        num_layers=FULL.dec_depth,
        default_layer=LAST,
        input_hw=(288, 512),
        num_frames=None,
        frame_layout="per-frame (all frames in one multi-view pass)",
        extras=None,
        description="Fast3R ViT-L 512 fusion transformer, C=1024; layer -1 = the reference's feature index 24 "
        "(dec_norm of block 24), 512x288 -> 18x32 (own implementation)",
    )
    register(spec, functools.partial(build, spec))


_register()

__all__ = ["Fast3RConfig", "FULL", "TINY", "Fast3RNet", "Fast3RBackbone", "build_model", "build", "input_hw",
           "DROPPED_PREFIXES", "MODEL_ID", "REFERENCE_INDEX", "sincos_1d"]
