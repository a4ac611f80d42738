"""V-JEPA 2 through transformers' ``VJEPA2Model`` (encoder only; the predictor is never run).

Input: square frames of ``crop_size`` (256 for the fpc64-256 checkpoints):
the encoder's 3D RoPE derives row/column positions from a square
``crop_size/16`` grid, so non-square input is not expressible; frames are
resized (aspect not kept) to ``crop_size x crop_size``. ``height == width``
overrides the crop size (RoPE extrapolates). ImageNet mean/std.

Frame layout: consecutive clips of up to ``frames_per_clip`` frames (64 for
the fpc64 checkpoints), each padded to a multiple of the tubelet (2) by
repeating its last frame; map ``q`` of clip ``c`` is tubelet ``q``, so frame
``t`` -> ``offset(c) + (t - start(c)) // 2``. Layer ``-1`` is the encoder's
final LayerNorm output (``last_hidden_state``); layer ``k`` is block ``k``'s
raw output (``hidden_states[k]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import (
    LAST,
    ImageNetEncoder,
    pad_clip,
    require_transformers,
    round_up,
    run_tapped,
    start_extract,
    tokens_to_grid,
)
from vidprobe.backbones.loading import load_hf_model

# name -> (hub id, hidden, layers, heads, mlp_ratio, crop)
VARIANTS: dict[str, tuple[str, int, int, int, float, int]] = {
    "vitl-fpc64-256": ("facebook/vjepa2-vitl-fpc64-256", 1024, 24, 16, 4.0, 256),
    "vith-fpc64-256": ("facebook/vjepa2-vith-fpc64-256", 1280, 32, 16, 4.0, 256),
    "vitg-fpc64-256": ("facebook/vjepa2-vitg-fpc64-256", 1408, 40, 22, 48 / 11, 256),
    "vitg-fpc64-384": ("facebook/vjepa2-vitg-fpc64-384", 1408, 40, 22, 48 / 11, 384),
}
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2.0, crop_size=32,
            frames_per_clip=4, pred_hidden_size=16, pred_num_hidden_layers=1, pred_num_attention_heads=2,
            num_pooler_layers=1)


def full_config(variant: str):
    tf = require_transformers()
    _, hidden, layers, heads, ratio, crop = VARIANTS[variant]
    return tf.VJEPA2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=ratio,
                           crop_size=crop, frames_per_clip=64, tubelet_size=2, patch_size=16)


class VJEPA2Backbone(ImageNetEncoder):
    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device, dtype, frames_per_clip: int | None = None,
                 model_id: str | None = None):
        self.spec = spec
        self.model = model  # VJEPA2Model; run with skip_predictor=True
        self.encoder = model.encoder
        cfg = model.config
        self.patch, self.tubelet, self.crop = int(cfg.patch_size), int(cfg.tubelet_size), int(cfg.crop_size)
        self.input_hw = (self.crop, self.crop)
        self.frames_per_clip = int(frames_per_clip or cfg.frames_per_clip)
        self.device, self.dtype = device, dtype
        self.model_id = model_id

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.encoder.layer

    def clips(self, T: int) -> list[list[int]]:
        out = []
        for s in range(0, T, self.frames_per_clip):
            c = list(range(s, min(s + self.frames_per_clip, T)))
            out.append(pad_clip(c, round_up(len(c), self.tubelet)))
        return out

    def frame_index(self, T: int) -> torch.Tensor:
        idx = torch.empty(T, dtype=torch.long)
        offset = 0
        for s in range(0, T, self.frames_per_clip):
            n = min(self.frames_per_clip, T - s)
            idx[s : s + n] = offset + torch.div(torch.arange(n), self.tubelet, rounding_mode="floor")
            offset += round_up(n, self.tubelet) // self.tubelet
        return idx

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        T = video.shape[0]
        frames = self.preprocess(video)
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        h = w = self.crop // self.patch
        for c in self.clips(T):
            x = frames[c][None]  # [1, L, 3, H, W] (the layout VJEPA2 expects)
            toks = run_tapped(self.blocks, resolved, lambda x=x: self.model(pixel_values_videos=x, skip_predictor=True),
                              final=self.encoder.layernorm)
            for req, tok in toks.items():
                parts[req].append(tokens_to_grid(tok, len(c) // self.tubelet, h, w).float().cpu())
        maps = {(req, None): torch.cat(v) for req, v in parts.items()}
        info = {"input_hw": self.input_hw, "grid": (h, w), "layout": self.spec.frame_layout, "model_id": self.model_id}
        return FeatureSet(maps=maps, frame_index=self.frame_index(T), info=info)


@dataclass(frozen=True)
class VJEPA2Options:
    """V-JEPA 2's own build option."""

    frames_per_clip: int | None = None  # frames per encoder clip (None: the config's, 64)


def make(ctx: BuildContext, own: VJEPA2Options) -> VJEPA2Backbone:
    """V-JEPA 2: hub weights or a seeded random init; ``height == width`` sets the config's ``crop_size``."""
    tf = require_transformers()
    overrides = None
    if ctx.hw is not None:
        h, w = ctx.hw
        if h != w:
            raise ValueError(f"{ctx.name}: V-JEPA 2's RoPE grid is square; height must equal width, got {h}x{w}")
        overrides = {"crop_size": h}
    model = load_hf_model(ctx, tf.VJEPA2Model, lambda: full_config(ctx.variant), TINY, overrides)
    return VJEPA2Backbone(ctx.spec, model, ctx.device, ctx.dtype, own.frames_per_clip, model_id=ctx.loaded_id)


FAMILY = Family("vjepa2", make, options=ENCODER_OPTIONS, own=VJEPA2Options)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, (hub, hidden, layers, _, _, crop) in VARIANTS.items():
        spec = BackboneSpec(
            name=f"vjepa2-{variant}",
            family="vjepa2",
            model_id=hub,
            num_layers=layers,
            default_layer=LAST,
            input_hw=(crop, crop),
            num_frames=64,
            frame_layout="clips of 64 frames, tubelet 2",
            extras="hf",
            description=f"V-JEPA 2 {variant.split('-')[0].upper()}, C={hidden}",
        )
        FAMILY.register(spec, variant)
