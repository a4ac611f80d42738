"""Fast3R (ViT-L 512): all frames in one multi-view pass; fused features of the fusion transformer.

There is no installable ``fast3r`` package on PyPI, so this is a compact own
implementation of the released model's encoder and fusion transformer
(facebookresearch/fast3r, ``fast3r/models/fast3r.py``: ``CroCoEncoder`` and
``Fast3RDecoder``; ours in :mod:`vidprobe.backbones.model_fast3r`), with the parameter names and shapes of the checkpoint
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

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family, NoOptions
from vidprobe.backbones.common import (
    LAST,
    check_kernel,
    normalize,
    per_frame_index,
    resize_video,
    start_extract,
)
from vidprobe.backbones.loading import load_checkpoint_model
from vidprobe.backbones.model_fast3r import FULL, TINY, Fast3RConfig, Fast3RNet, sincos_1d  # noqa: F401 (tests use them here)

MODEL_ID = "jedyang97/Fast3R_ViT_Large_512"
DROPPED_PREFIXES = ("downstream_head.", "downstream_head_local.")
REFERENCE_INDEX = 24  # the reference's feature index (= vidprobe layer -1 for the 24-block fusion transformer)


def build_model(model_id: str | None = MODEL_ID, revision: str | None = None, tiny: bool = False,
                random_init: bool = False, seed: int = 0, device: str | torch.device | None = None,
                config: Fast3RConfig | None = None) -> Fast3RNet:
    """Fast3R ViT-L 512 from a hub id / local dir / file, or a seeded random model (``tiny`` for tests)."""
    cfg = config or (TINY if tiny else FULL)
    return load_checkpoint_model(lambda: Fast3RNet(cfg), model_id, revision, tiny or random_init, seed, device,
                                 DROPPED_PREFIXES, "Fast3R")


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
        resolved = start_extract(self, video, layers, timesteps)
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


def make(ctx: BuildContext, own: NoOptions) -> Fast3RBackbone:
    """Fast3R as a backbone; ``height``/``width`` (multiples of 16) replace the long-side-512 resize.

    ``resize``: frame resize kernel (:mod:`vidprobe.backbones.resize`; the study's release: ``pil-lanczos``).
    """
    model = build_model(ctx.model_id, ctx.options.revision, random_init=ctx.random, seed=ctx.seed, device=ctx.device,
                        config=ctx.config(FULL, TINY))
    return Fast3RBackbone(ctx.spec, model, ctx.device, ctx.dtype, ctx.loaded_id, seed=ctx.seed,
                          height=ctx.options.height, width=ctx.options.width, resize=ctx.options.resize)


FAMILY = Family("fast3r", make, options=ENCODER_OPTIONS + ("resize",), defaults={"resize": "bicubic"})
build = FAMILY.build  # build(spec, **options)


def register_backbones() -> None:
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
    FAMILY.register(spec)

__all__ = ["Fast3RConfig", "FULL", "TINY", "Fast3RNet", "Fast3RBackbone", "build_model", "build", "input_hw",
           "DROPPED_PREFIXES", "MODEL_ID", "REFERENCE_INDEX", "sincos_1d"]
