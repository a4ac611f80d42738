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
    chunked_clips,
    drop_unused,
    load_or_random,
    prepare_frames,
    require_transformers,
    resolve_device,
    resolve_dtype,
    resolve_layers,
    run_tapped,
    tokens_to_grid,
)

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


class VideoMAEBackbone:
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

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        return prepare_frames(video, self.input_hw, IMAGENET_MEAN, IMAGENET_STD, self.device, self.dtype)

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
        who = self.spec.name
        check_video(video, who)
        check_timesteps(timesteps, who)
        resolved = resolve_layers(layers, self.num_layers, who)
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
) -> VideoMAEBackbone:
    tf = require_transformers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    hw = both_or_neither(height, width, spec.name)
    overrides = dict(config_overrides or {})
    if hw is not None:
        overrides["image_size"] = list(hw)
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
            config = tf.VideoMAEConfig.from_pretrained(mid, revision=revision)
        for k, v in overrides.items():
            setattr(config, k, v)
    model = load_or_random(tf.VideoMAEModel, config, mid, revision, random_init, dtype=dt, device=dev, seed=seed)
    return VideoMAEBackbone(spec, model, dev, dt, model_id=None if random_init else mid)


def _register() -> None:
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
        register(spec, functools.partial(build, spec, variant))


_register()
