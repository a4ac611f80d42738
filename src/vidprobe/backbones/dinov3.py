"""DINOv3 (ViT-S/S+/B/L/H+/7B, patch 16, LVD-1689M) through transformers, one frame at a time.

``DINOv3ViTModel`` (``facebook/dinov3-<size>-pretrain-lvd1689m``): patch 16, 1 CLS + 4 register tokens before the
patch tokens, 2D RoPE over the patch grid (any input size that is a multiple of 16; no position table to
interpolate). Layout ``per-frame`` (map ``t`` serves frame ``t``), as DINOv2 (:mod:`.dinov2`): every frame resized to
the input size with the ``resize`` kernel (default ``bilinear``, what the DINOv3 image processor uses) and normalised
with the ImageNet mean/std (the processor's); default 480x832 -> a 30 x 52 grid, the grid of the study's DINOv2
reading. Features are the patch tokens: the 1 + 4 prefix tokens are dropped. Layer ``k`` is the raw output of block
``k`` (``model.model.layer[k-1]``); layer ``-1`` (the default, as the study reads DINOv2) is the final LayerNorm
output, ``last_hidden_state[:, 5:]``. ``tiny=True``: the same class at a tiny config (2 blocks, C = 32, 4 registers) fed 48x32 frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import LAST, per_frame_index, require_transformers, run_tapped, start_extract
from vidprobe.backbones.dinov2 import DINOv2Backbone
from vidprobe.backbones.loading import load_hf_model

REFERENCE_HW = (480, 832)  # -> 30 x 52 patches, the grid of the study's DINOv2 reading
#: size -> (display name, hidden); the architectures are in vidprobe.backbones.fullsize.DINOV3
SIZES: dict[str, tuple[str, int]] = {
    "vits16": ("ViT-S/16", 384), "vits16plus": ("ViT-S+/16", 384), "vitb16": ("ViT-B/16", 768),
    "vitl16": ("ViT-L/16", 1024), "vith16plus": ("ViT-H+/16", 1280), "vit7b16": ("ViT-7B/16", 4096),
}
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TINY_HW = (32, 48)  # a tiny model's input size when none is given (2 x 3 patches)


def hub_id(size: str) -> str:
    return f"facebook/dinov3-{size}-pretrain-lvd1689m"


def full_config(size: str):
    """The hub config of a variant (:data:`vidprobe.backbones.fullsize.DINOV3`), so random weights need no download."""
    from vidprobe.backbones.fullsize import DINOV3

    return require_transformers().DINOv3ViTConfig(**DINOV3[size])


class DINOv3Backbone(DINOv2Backbone):
    """Adapter around a transformers ``DINOv3ViTModel``: DINOv2's (prefix = CLS + the config's registers, input size
    snapped to the patch, ImageNet preprocessing), with DINOv3's block list and final norm."""

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.model.model.layer

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, prefix + h*w, C]`` -> ``[B, h, w, C]``: the CLS and register tokens dropped."""
        h, w = self.grid
        t = tokens[:, self.num_prefix:, :]
        return t.reshape(t.shape[0], h, w, t.shape[-1])

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        for chunk in self.preprocess(video).split(self.batch_size):
            toks = run_tapped(self.blocks, resolved, lambda chunk=chunk: self.model(pixel_values=chunk),
                              final=self.model.norm)
            for req, t in toks.items():
                parts[req].append(self.patch_tokens(t).float().cpu())
        info = {
            "input_hw": self.input_hw, "grid": self.grid, "layout": self.spec.frame_layout, "model_id": self.model_id,
            "prefix_tokens": self.num_prefix, "last_is_final_norm": any(req == LAST for req, _ in resolved),
            "resize": self.resize,
        }
        return FeatureSet(maps={(req, None): torch.cat(v) for req, v in parts.items()},
                          frame_index=per_frame_index(video.shape[0]), info=info)


@dataclass(frozen=True)
class DINOv3Options:
    """DINOv3's own build option (the common ones, ``resize`` included, are in ``BuildOptions``)."""

    batch_size: int = 8  # frames per forward pass


def make(ctx: BuildContext, own: DINOv3Options) -> DINOv3Backbone:
    """A DINOv3 variant: hub weights or a seeded random init (``tiny``: 2 blocks, C = 32)."""
    model = load_hf_model(ctx, require_transformers().DINOv3ViTModel, lambda: full_config(ctx.variant), TINY)
    return DINOv3Backbone(ctx.spec, model, ctx.input_hw(TINY_HW), ctx.device, ctx.dtype, batch_size=own.batch_size,
                          model_id=ctx.loaded_id, resize=ctx.options.resize)


FAMILY = Family("dinov3", make, options=ENCODER_OPTIONS + ("resize",), own=DINOv3Options)
build = FAMILY.build  # build(spec, size, **options)


def register_backbones() -> None:
    from vidprobe.backbones.fullsize import DINOV3

    for size, (display, hidden) in SIZES.items():
        FAMILY.register(BackboneSpec(
            name=f"dinov3-{size}",
            family="dinov3",
            model_id=hub_id(size),
            num_layers=DINOV3[size]["num_hidden_layers"],
            default_layer=LAST,
            input_hw=REFERENCE_HW,
            num_frames=None,
            frame_layout="per-frame",
            extras="hf",
            description=f"DINOv3 {display} (LVD-1689M) + 4 registers, RoPE, C={hidden}; default: last layer "
                        f"(final norm), 832x480 -> 30x52",
        ), size)
