"""DINOv2 (ViT-S/B/L/G, with and without registers) through transformers, one frame at a time.

Layout: per frame (map t serves frame t). Input: every frame resized to the
adapter's input size (a multiple of the patch size 14; the reference feeds
728x420 -> a 30x52 grid) with the ``resize`` kernel (default ``bilinear``;
the study's release resizes the decoded frames with PIL bicubic:
``resize="pil-bicubic"``) and normalised with the ImageNet mean/std.
Features are the patch tokens (CLS and register tokens dropped). Layer ``k``
is the raw output of block ``k``; layer ``-1`` is the model's final
LayerNorm output (``last_hidden_state`` without its CLS token, the hub
model's ``x_norm_patchtokens``). The study's release reads exactly that from
``Dinov2Model`` (``facebook/dinov2-large``: no register tokens) in fp32;
``tests/test_backbones_encoders.py`` checks layer ``-1`` against
``last_hidden_state[:, 1:]`` and the preprocessing against transformers'
``BitImageProcessor`` (the dinov2 processor, with ``do_resize`` and
``do_center_crop`` off as in the release) on PIL-bicubic-resized frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import (
    LAST,
    ImageNetEncoder,
    check_kernel,
    per_frame_index,
    require_transformers,
    run_tapped,
    snap_hw,
    start_extract,
)
from vidprobe.backbones.loading import load_hf_model

PATCH = 14
REFERENCE_HW = (420, 728)  # (H, W): the reference's 728x420 input -> 30x52 tokens

# size -> (hidden, layers, heads, swiglu); patch 14, image 518, 4 registers for the -reg variants
SIZES: dict[str, tuple[int, int, int, bool]] = {
    "small": (384, 12, 6, False),
    "base": (768, 12, 12, False),
    "large": (1024, 24, 16, False),
    "giant": (1536, 40, 24, True),
}
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=28)


def hub_id(size: str, registers: bool) -> str:
    return f"facebook/dinov2-with-registers-{size}" if registers else f"facebook/dinov2-{size}"


def full_config(size: str, registers: bool):
    """The hub config of a variant, written out so random-weight runs need no download."""
    tf = require_transformers()
    hidden, layers, heads, swiglu = SIZES[size]
    kw: dict[str, Any] = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
        patch_size=PATCH, image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6, use_swiglu_ffn=swiglu,
    )
    if registers:
        return tf.Dinov2WithRegistersConfig(num_register_tokens=4, **kw)
    return tf.Dinov2Config(**kw)


class DINOv2Backbone(ImageNetEncoder):
    """Adapter around a transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel``."""

    def __init__(
        self,
        spec: BackboneSpec,
        model: torch.nn.Module,
        input_hw: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int = 8,
        model_id: str | None = None,
        resize: str = "bilinear",
    ):
        self.spec = spec
        self.model = model
        self.patch = int(model.config.patch_size)
        self.input_hw = snap_hw(input_hw, self.patch)
        self.num_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)  # CLS + registers
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.model_id = model_id
        self.resize = check_kernel(resize, spec.name)

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.model.encoder.layer

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_hw[0] // self.patch, self.input_hw[1] // self.patch

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        x = self.preprocess(video)
        h, w = self.grid
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        for chunk in x.split(self.batch_size):
            toks = run_tapped(
                self.blocks, resolved, lambda chunk=chunk: self.model(pixel_values=chunk), final=self.model.layernorm
            )
            for req, t in toks.items():
                t = t[:, self.num_prefix:, :]
                parts[req].append(t.reshape(t.shape[0], h, w, t.shape[-1]).float().cpu())
        maps = {(req, None): torch.cat(v) for req, v in parts.items()}
        info = {
            "input_hw": self.input_hw, "grid": (h, w), "layout": self.spec.frame_layout, "model_id": self.model_id,
            "last_is_final_norm": any(req == LAST for req, _ in resolved), "resize": self.resize,
        }
        return FeatureSet(maps=maps, frame_index=per_frame_index(video.shape[0]), info=info)


@dataclass(frozen=True)
class DINOv2Options:
    """DINOv2's own build option (the common ones, ``resize`` included, are in ``BuildOptions``)."""

    batch_size: int = 8  # frames per forward pass


def make(ctx: BuildContext, own: DINOv2Options) -> DINOv2Backbone:
    """A DINOv2 variant ``(size, registers)``: hub weights or a seeded random init (``tiny``: 3 blocks).

    ``resize``: frame resize kernel (:mod:`vidprobe.backbones.resize`; the study's release: ``pil-bicubic``).
    """
    tf = require_transformers()
    size, registers = ctx.variant
    cls = tf.Dinov2WithRegistersModel if registers else tf.Dinov2Model
    model = load_hf_model(ctx, cls, lambda: full_config(size, registers), TINY)
    return DINOv2Backbone(ctx.spec, model, ctx.input_hw(), ctx.device, ctx.dtype, batch_size=own.batch_size,
                          model_id=ctx.loaded_id, resize=ctx.options.resize)


FAMILY = Family("dinov2", make, options=ENCODER_OPTIONS + ("resize",), own=DINOv2Options)
build = FAMILY.build  # build(spec, (size, registers), **options)


def register_backbones() -> None:
    for registers in (False, True):
        for size, (hidden, layers, _, _) in SIZES.items():
            name = f"dinov2-reg-{size}" if registers else f"dinov2-{size}"
            ref = size == "large" and not registers
            spec = BackboneSpec(
                name=name,
                family="dinov2",
                model_id=hub_id(size, registers),
                num_layers=layers,
                default_layer=LAST,
                input_hw=REFERENCE_HW,
                num_frames=None,
                frame_layout="per-frame",
                extras="hf",
                description=f"DINOv2 ViT-{size[0].upper()}/14{' + 4 registers' if registers else ''}, C={hidden}"
                + (" (reference: last layer, 728x420)" if ref else ""),
            )
            FAMILY.register(spec, (size, registers))
