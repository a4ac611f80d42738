"""VideoMAE through transformers' ``VideoMAEModel`` (self-supervised masked video autoencoder).

VideoMAE's position table is a fixed 1D sin-cos table over the flattened
``(num_frames/2) x (H/16) x (W/16)`` tokens of its training input (16 frames,
224x224), so clips must have exactly ``num_frames`` frames and the trained
size: frames are resized (aspect not kept) to 224x224 and normalised with the
ImageNet mean/std. ``height``/``width`` change the config's ``image_size``
(the 1D table is rebuilt for the new token count; the model never saw that
layout, so it is off-distribution).

Frame layout: consecutive clips of ``num_frames`` (16) frames, the last one
padded by repeating its last frame; map ``q`` of clip ``c`` is tubelet ``q``
(``frame t -> 8c + (t - 16c)//2``); maps made only of padding are dropped.
Layer ``k`` is block ``k``'s raw output (``hidden_states[k]``); layer ``-1``
is ``last_hidden_state`` (after the final LayerNorm when the checkpoint has
one, i.e. ``use_mean_pooling=False``; otherwise the last block's output).
"""

from __future__ import annotations

from typing import Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family, NoOptions
from vidprobe.backbones.common import (
    LAST,
    ImageNetEncoder,
    chunked_clips,
    drop_unused,
    require_transformers,
    run_tapped,
    start_extract,
    tokens_to_grid,
)
from vidprobe.backbones.loading import load_hf_model

# name -> (hub id, hidden, layers, heads)
VARIANTS: dict[str, tuple[str, int, int, int]] = {
    "base": ("MCG-NJU/videomae-base", 768, 12, 12),
    "large": ("MCG-NJU/videomae-large", 1024, 24, 16),
}
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
            num_frames=4)


def full_config(variant: str):
    tf = require_transformers()
    _, hidden, layers, heads = VARIANTS[variant]
    return tf.VideoMAEConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * hidden, image_size=224, patch_size=16, num_frames=16,
                             tubelet_size=2, use_mean_pooling=False)


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


class VideoMAEBackbone(ImageNetEncoder):
    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device, dtype, model_id: str | None = None):
        self.spec = spec
        self.model = model
        cfg = model.config
        self.patch, self.tubelet, self.clip_len = int(cfg.patch_size), int(cfg.tubelet_size), int(cfg.num_frames)
        self.input_hw = _hw(cfg.image_size)
        self.device, self.dtype = device, dtype
        self.model_id = model_id

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.model.encoder.layer

    def clips(self, T: int) -> list[list[int]]:
        return chunked_clips(T, self.clip_len)

    def frame_index(self, T: int) -> torch.Tensor:
        """Before dropping padding-only maps: frame t -> (t // clip_len) * maps_per_clip + (t % clip_len) // tubelet."""
        t = torch.arange(T)
        per_clip = self.clip_len // self.tubelet
        return (t // self.clip_len) * per_clip + (t % self.clip_len) // self.tubelet

    def _final(self, tok: torch.Tensor) -> torch.Tensor:
        return self.model.layernorm(tok) if self.model.layernorm is not None else tok

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        T = video.shape[0]
        frames = self.preprocess(video)
        h, w = self.input_hw[0] // self.patch, self.input_hw[1] // self.patch
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        for c in self.clips(T):
            x = frames[c][None]  # [1, 16, 3, H, W]
            toks = run_tapped(self.blocks, resolved, lambda x=x: self.model(pixel_values=x), final=self._final)
            for req, tok in toks.items():
                parts[req].append(tokens_to_grid(tok, self.clip_len // self.tubelet, h, w).float().cpu())
        fi = self.frame_index(T)
        maps = {}
        for req, v in parts.items():
            maps[(req, None)], idx = drop_unused(torch.cat(v), fi)
        info = {"input_hw": self.input_hw, "grid": (h, w), "layout": self.spec.frame_layout, "model_id": self.model_id}
        return FeatureSet(maps=maps, frame_index=idx, info=info)


def make(ctx: BuildContext, own: NoOptions) -> VideoMAEBackbone:
    """VideoMAE: hub weights or a seeded random init; ``height``/``width`` set the config's ``image_size``."""
    tf = require_transformers()
    overrides = {"image_size": list(ctx.hw)} if ctx.hw is not None else None
    model = load_hf_model(ctx, tf.VideoMAEModel, lambda: full_config(ctx.variant), TINY, overrides)
    return VideoMAEBackbone(ctx.spec, model, ctx.device, ctx.dtype, model_id=ctx.loaded_id)


FAMILY = Family("videomae", make, options=ENCODER_OPTIONS)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, (hub, hidden, layers, _) in VARIANTS.items():
        spec = BackboneSpec(
            name=f"videomae-{variant}",
            family="videomae",
            model_id=hub,
            num_layers=layers,
            default_layer=LAST,
            input_hw=(224, 224),
            num_frames=16,
            frame_layout="clips of 16 frames, tubelet 2",
            extras="hf",
            description=f"VideoMAE ViT-{variant[0].upper()}/16 (K400 self-supervised), C={hidden}",
        )
        FAMILY.register(spec, variant)
