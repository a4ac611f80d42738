"""VGGT-1B: a backbone (aggregator features) and the pseudo-label generator.

There is no installable ``vggt`` package on PyPI, so this is a compact own
implementation of the released architecture (facebookresearch/vggt,
``vggt/models/vggt.py``, ``aggregator.py``, ``heads/camera_head.py``,
``heads/dpt_head.py``). Parameter names and shapes are those of upstream's
``VGGT().state_dict()`` (the layout of the official checkpoint
``facebook/VGGT-1B``, ``model.safetensors`` or ``model.pt``; listed in
``tests/fixtures/vggt_keys.json``, generated from upstream), so it loads
strictly, except the tracking head (``track_head.*``), which vidprobe never
runs: those keys are dropped on load (:data:`DROPPED_PREFIXES`). The network
(:class:`VGGTModel`) is in :mod:`vidprobe.backbones.model_vggt`, built from
:mod:`vidprobe.nn` (ViT blocks, 2D RoPE, DPT and camera heads).

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

import math
from typing import Any

import torch
import torch.nn.functional as F

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family, NoOptions
from vidprobe.backbones.common import (
    LAST,
    check_video,
    per_frame_index,
    resolve_device,
    resolve_dtype,
    start_extract,
)
from vidprobe.backbones.loading import load_checkpoint_model
from vidprobe.backbones.model_vggt import FULL, TINY, DinoViT, VGGTConfig, VGGTModel  # noqa: F401 (tests use them here)

MODEL_ID = "facebook/VGGT-1B"
DROPPED_PREFIXES = ("track_head.",)


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
    return load_checkpoint_model(lambda: VGGTModel(cfg), model_id, revision, tiny or random_init, seed, device,
                                 DROPPED_PREFIXES, "VGGT")


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
        resolved = start_extract(self, video, layers, timesteps)
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


def make(ctx: BuildContext, own: NoOptions) -> VGGTBackbone:
    """VGGT-1B aggregator as a backbone; ``height``/``width`` replace VGGT's own resize with a fixed size."""
    model = build_model(ctx.model_id, ctx.options.revision, random_init=ctx.random, seed=ctx.seed, device=ctx.device,
                        config=ctx.config(FULL, TINY))
    return VGGTBackbone(ctx.spec, model, ctx.device, ctx.dtype, ctx.loaded_id, height=ctx.options.height,
                        width=ctx.options.width)


FAMILY = Family("vggt", make, options=ENCODER_OPTIONS)
build = FAMILY.build  # build(spec, **options)


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


def register_backbones() -> None:
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
    FAMILY.register(spec)

__all__ = [
    "VGGTConfig", "FULL", "TINY", "VGGTModel", "DinoViT",
    "build_model", "build", "build_labeler", "VGGTLabeler", "VGGTBackbone", "preprocess", "vggt_input_hw",
    "DROPPED_PREFIXES", "MODEL_ID",
]
