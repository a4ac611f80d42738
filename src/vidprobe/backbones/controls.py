"""Controls: what can a probe learn without a (trained) model?

* ``pixels`` - patchified RGB: every frame resized to ``grid * patch``
  pixels, each patch's ``3 x p x p`` values (in [0,1], channel-major) are the
  feature vector (patch 14 at 728x420 -> 30x52 x 588, the DINOv2 grid).
* ``random-<arch>`` - the same adapter and architecture as a family's
  reference variant with random weights (seed 0 by default): what the
  architecture and input layout alone give.
* ``oracle`` - features computed from the ground truth of the clip (needs
  ``clip``): an upper bound for what a probe can read out of a token grid.
  Per patch (``grid = input_hw // patch``, pooled from the clip's full
  resolution), 14 channels, in the scene normalised exactly as the probe's
  targets (rebased to frame 0 of the video, scaled by the mean distance of
  frame 0's valid points, :func:`vidprobe.geometry.normalize_scene`):

  ====  =======================================================================
  0-3   depth mean, min, max, std over the patch's valid pixels (normalised)
  4     fraction of valid pixels (0 = no depth: channels 0-3 and 8-10 are 0)
  5-7   mean viewing ray of the patch, unit length, in frame 0's camera axes
  8-10  mean world point of the valid pixels (frame-0 coordinates, normalised)
  11-13 the frame's camera centre (frame-0 coordinates, normalised)
  ====  =======================================================================

  The probe's targets are rebased to the first *sampled* frame; the
  reference sampler always includes frame 0, so the two frames agree.

All controls are per frame (map t serves frame t) and have one layer
(``1``, also reachable as ``-1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import BuildContext, Family
from vidprobe.backbones.common import (
    per_frame_index,
    resize_video,
    snap_hw,
    start_extract,
)

REGISTER_ORDER = 1  # after the families: random-<arch> reuses their registered builders

REFERENCE_HW = (420, 728)
ORACLE_CHANNELS = (
    "depth_mean", "depth_min", "depth_max", "depth_std", "valid_frac",
    "ray_x", "ray_y", "ray_z", "point_x", "point_y", "point_z", "cam_x", "cam_y", "cam_z",
)


def patchify(video: torch.Tensor, patch: int) -> torch.Tensor:
    """``[T,C,h*p,w*p] -> [T,h,w,C*p*p]`` (each patch's pixels flattened channel-major)."""
    T, C, H, W = video.shape
    if H % patch or W % patch:
        raise ValueError(f"patchify: size {H}x{W} is not a multiple of the patch {patch}")
    h, w = H // patch, W // patch
    return video.reshape(T, C, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(T, h, w, C * patch * patch)


class PixelsControl:
    num_layers = 1

    def __init__(self, spec: BackboneSpec, patch: int = 14, input_hw: tuple[int, int] = REFERENCE_HW):
        if patch < 1:
            raise ValueError(f"{spec.name}: patch must be >= 1, got {patch}")
        self.spec = spec
        self.patch = int(patch)
        self.input_hw = snap_hw(input_hw, self.patch)

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        x = resize_video(video.float(), self.input_hw).clamp(0, 1)
        feats = patchify(x, self.patch)
        grid = feats.shape[1:3]
        maps = {(req, None): feats for req, _ in resolved}
        return FeatureSet(maps=maps, frame_index=per_frame_index(video.shape[0]),
                          info={"input_hw": self.input_hw, "grid": tuple(grid), "layout": "per-frame"})


def _masked_pool(x: torch.Tensor, m: torch.Tensor, grid: tuple[int, int]):
    """Valid-weighted mean/min/max/std of ``x [T,H,W]`` over the patches of ``grid``; plus valid fraction."""
    dtype = x.dtype
    x = x.double()  # E[x^2] - E[x]^2 cancels badly in float32
    mf = m.double()[:, None]
    xv = x[:, None] * mf
    frac = F.adaptive_avg_pool2d(mf, grid)
    denom = frac.clamp_min(1e-12)
    mean = F.adaptive_avg_pool2d(xv, grid) / denom
    sq = F.adaptive_avg_pool2d(xv * x[:, None], grid) / denom
    std = (sq - mean**2).clamp_min(0).sqrt()
    big = torch.finfo(x.dtype).max
    mx = F.adaptive_max_pool2d(torch.where(m[:, None], x[:, None], -big), grid)
    mn = -F.adaptive_max_pool2d(torch.where(m[:, None], -x[:, None], -big), grid)
    has = frac > 0
    z = torch.zeros_like(mean)
    out = [torch.where(has, t, z)[:, 0].to(dtype) for t in (mean, mn, mx, std)]
    return out, frac[:, 0].to(dtype)


def oracle_features(clip: Any, grid: tuple[int, int]) -> torch.Tensor:
    """``[T, h, w, 14]`` ground-truth features of a Clip (see the module docstring for the channels)."""
    from vidprobe.geometry import normalize_scene, unproject_depth

    depth = clip.depth.float()
    valid = clip.valid & (depth > 0)
    pts = clip.world_points().float()
    ext = clip.extrinsics.float()
    K = clip.intrinsics.float()
    ns = normalize_scene(pts, depth, ext, valid, mode="first")
    (d_mean, d_min, d_max, d_std), frac = _masked_pool(ns.depth, valid, grid)
    # viewing rays: camera t's pixel rays rotated into frame 0's camera (= the rebased world) axes
    rays_cam = unproject_depth(torch.ones_like(depth), K)  # [T,H,W,3], z = 1
    R = ns.extrinsics[:, :3, :3]  # world(frame-0 cam) -> cam t
    rays = torch.einsum("tji,thwj->thwi", R, rays_cam)  # R^T d
    rays = F.normalize(rays, dim=-1)
    ray = F.adaptive_avg_pool2d(rays.permute(0, 3, 1, 2), grid)
    ray = F.normalize(ray, dim=1)
    mf = valid.float()[:, None]
    p = ns.points.permute(0, 3, 1, 2)
    p_mean = F.adaptive_avg_pool2d(p * mf, grid) / F.adaptive_avg_pool2d(mf, grid).clamp_min(1e-12)
    p_mean = torch.where(frac[:, None] > 0, p_mean, torch.zeros_like(p_mean))
    centers = -(R.transpose(-1, -2) @ ns.extrinsics[:, :3, 3:4])[..., 0]  # [T,3]
    h, w = grid
    cams = centers[:, :, None, None].expand(-1, -1, h, w)
    feats = torch.cat(
        [torch.stack([d_mean, d_min, d_max, d_std, frac], 1), ray, p_mean, cams], dim=1
    )  # [T,14,h,w]
    return feats.permute(0, 2, 3, 1).contiguous()


class OracleControl:
    num_layers = 1

    def __init__(self, spec: BackboneSpec, patch: int = 14, input_hw: tuple[int, int] = REFERENCE_HW):
        self.spec = spec
        self.patch = int(patch)
        self.input_hw = snap_hw(input_hw, self.patch)

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_hw[0] // self.patch, self.input_hw[1] // self.patch

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        who = self.spec.name
        resolved = start_extract(self, video, layers, timesteps)
        if clip is None:
            raise ValueError(
                f"{who}: the oracle control builds features from ground truth and needs the clip: "
                "call extract(video, layers, clip=clip) with the Clip of the same frames"
            )
        if clip.num_frames != video.shape[0]:
            raise ValueError(f"{who}: field 'clip': {clip.num_frames} frames, but the video has {video.shape[0]}")
        feats = oracle_features(clip, self.grid)
        maps = {(req, None): feats for req, _ in resolved}
        return FeatureSet(maps=maps, frame_index=per_frame_index(video.shape[0]),
                          info={"input_hw": self.input_hw, "grid": self.grid, "layout": "per-frame",
                                "channels": list(ORACLE_CHANNELS)})


@dataclass(frozen=True)
class PatchOptions:
    """The pixel and oracle controls' own option."""

    patch: int = 14  # patch size in pixels (the grid is input size // patch)


def make_pixels(ctx: BuildContext, own: PatchOptions) -> PixelsControl:
    """``device`` is accepted for a uniform CLI; the control runs on the CPU."""
    return PixelsControl(ctx.spec, own.patch, ctx.input_hw())


def make_oracle(ctx: BuildContext, own: PatchOptions) -> OracleControl:
    return OracleControl(ctx.spec, own.patch, ctx.input_hw())


CONTROL_OPTIONS = ("height", "width", "device")
PIXELS = Family("pixels", make_pixels, options=CONTROL_OPTIONS, own=PatchOptions)
ORACLE = Family("oracle", make_oracle, options=CONTROL_OPTIONS, own=PatchOptions)
build_pixels, build_oracle = PIXELS.build, ORACLE.build  # build_pixels(spec, **options)

#: what ``random-<arch>`` passes on to the base variant's builder (with ``random_init=True``)
RANDOM_OPTIONS = ("dtype", "device", "tiny", "height", "width", "config_overrides", "seed")


def make_random(ctx: BuildContext, own: Any) -> Any:
    """``random-<arch>``: the base variant's registered builder (``ctx.variant``) with seeded random weights."""
    from vidprobe.backbones.base import _REGISTRY

    base_factory = _REGISTRY[ctx.variant][1]
    bb = base_factory(**{k: getattr(ctx.options, k) for k in RANDOM_OPTIONS}, random_init=True)
    bb.spec = ctx.spec
    return bb


RANDOM = Family("random", make_random, options=RANDOM_OPTIONS)


# family -> the variant whose architecture the random control copies (the reference one)
RANDOM_OF = {
    "dinov2": "dinov2-large",
    "vjepa": "vjepa-vith16-384",
    "vjepa2": "vjepa2-vitl-fpc64-256",
    "videomae": "videomae-base",
}


def register_backbones() -> None:
    for name, desc in (
        ("pixels", "control: patchified RGB (patch 14 -> C = 588), no model"),
        ("oracle", "control: per-patch ground-truth depth stats, rays, points, camera centre (needs GT; upper bound)"),
    ):
        spec = BackboneSpec(name=name, family="control", model_id=None, num_layers=1, default_layer=1,
                            input_hw=REFERENCE_HW, num_frames=None, frame_layout="per-frame", description=desc)
        (PIXELS if name == "pixels" else ORACLE).register(spec)
    from vidprobe.backbones.base import _REGISTRY

    for family, base in RANDOM_OF.items():
        base_spec = _REGISTRY[base][0]
        spec = BackboneSpec(
            name=f"random-{family}", family="control", model_id=None, num_layers=base_spec.num_layers,
            default_layer=base_spec.default_layer, input_hw=base_spec.input_hw, num_frames=base_spec.num_frames,
            frame_layout=base_spec.frame_layout, extras=base_spec.extras,
            description=f"control: {base} architecture with random weights (seeded)",
        )
        RANDOM.register(spec, base)
