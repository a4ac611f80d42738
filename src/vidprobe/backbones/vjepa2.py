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

import functools
from typing import Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet, register
from vidprobe.backbones.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAST,
    both_or_neither,
    check_timesteps,
    check_video,
    load_or_random,
    pad_clip,
    prepare_frames,
    require_transformers,
    resolve_device,
    resolve_dtype,
    resolve_layers,
    round_up,
    run_tapped,
    tokens_to_grid,
)

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


class VJEPA2Backbone:
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

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        return prepare_frames(video, self.input_hw, IMAGENET_MEAN, IMAGENET_STD, self.device, self.dtype)

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
        who = self.spec.name
        check_video(video, who)
        check_timesteps(timesteps, who)
        resolved = resolve_layers(layers, self.num_layers, who)
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


def build(
    spec: BackboneSpec,
    variant: str,
    model_id: str | None = None,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    tiny: bool = False,
    height: int | None = None,
    width: int | None = None,
    config_overrides: dict | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames_per_clip: int | None = None,
) -> VJEPA2Backbone:
    tf = require_transformers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    hw = both_or_neither(height, width, spec.name)
    overrides = dict(config_overrides or {})
    if hw is not None:
        if hw[0] != hw[1]:
            raise ValueError(f"{spec.name}: V-JEPA 2's RoPE grid is square; height must equal width, got {hw[0]}x{hw[1]}")
        overrides["crop_size"] = hw[0]
    config = None
    if tiny or random_init:
        config = full_config(variant)
        if tiny:
            for k, v in TINY.items():
                setattr(config, k, v)
        random_init = True
    mid = model_id or spec.model_id
    if overrides:
        if config is None:
            config = tf.VJEPA2Config.from_pretrained(mid, revision=revision)
        for k, v in overrides.items():
            setattr(config, k, v)
    model = load_or_random(tf.VJEPA2Model, config, mid, revision, random_init, dtype=dt, device=dev, seed=seed)
    return VJEPA2Backbone(spec, model, dev, dt, frames_per_clip, model_id=None if random_init else mid)


def _register() -> None:
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
        register(spec, functools.partial(build, spec, variant))


_register()
