"""V-JEPA (the original 2024 release: ViT-L/16, ViT-H/16, ViT-H/16-384), a compact own encoder.

No maintained installable package ships the original V-JEPA encoder (the PyPI
forks pull pinned torchvision/decord/pandas and training code), and
transformers' ``VJEPA2Model`` uses RoPE while V-JEPA 1 uses fixed 3D sin-cos
position embeddings, so vidprobe implements the encoder itself
(:mod:`vidprobe.backbones.model_vjepa`, from :mod:`vidprobe.nn`) with the
official checkpoint's parameter names, so the released ``.pth.tar`` files
load with ``load_state_dict(strict=True)``:

    patch_embed.proj.{weight,bias}   Conv3d 3->D, kernel = stride = (tubelet 2, 16, 16)
    pos_embed                        [1, (F/2)*(S/16)^2, D] fixed 3D sin-cos (stored in the checkpoint)
    blocks.N.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2
    norm                             final LayerNorm (eps 1e-6)

Checkpoint: the file keeps two encoders, ``encoder`` (the online encoder) and
``target_encoder`` (its EMA copy), each under a ``module.backbone.`` prefix
(DDP + multi-mask wrapper); :func:`load_vjepa_state_dict` takes the entry
named by ``checkpoint_key`` and strips ``module.`` and ``backbone.``. The
default is ``target_encoder``; the study's release loads ``encoder``
(``checkpoint_key="encoder"``, set by the paper configs; proven by
``tests/test_parity_vjepa.py``, whose fixture checkpoint holds both). Inputs
of another size than the trained one get the position table trilinearly
interpolated from the trained grid (``align_corners=False``; equal to the
release's scale-factor interpolation in the parity test, 2x2 -> 2x3 grid).

Frame layout (the reference's setting): the video is split into 5
interleaved clips that all start with frame 0 (clip k = frame 0, k+1, k+6,
...; see :func:`vidprobe.backbones.common.interleaved_clips`); 76 frames give
five 16-frame clips, each resized to 832x480 -> 8 x 30 x 52 tokens. Each
clip is padded to a multiple of the tubelet by repeating its last frame.
Feature maps are concatenated clip after clip, so map ``8k + q`` is tubelet
``q`` of clip ``k``; frame ``t >= 1`` is served by clip ``(t-1) % 5``,
tubelet ``((t-1)//5 + 1) // 2``, frame 0 by map 0. The clips and this frame
-> map table are those of the release's ``VJEPAFeaturizer_Spaced`` and its
probe dataset (``tests/test_parity_vjepa.py``).

Layers: layer ``k`` (1..L) is block ``k``'s raw output; layer ``-1`` is the
encoder's output after the final LayerNorm. The study's release returns the
last block *before* the norm (its norm lines are commented out), i.e. layer
``L`` (32 for ViT-H), which is the reference variant's default layer.
Reference inputs: fp32, frames resized with PIL bilinear (``resize=
"pil-bilinear"``: torchvision ``T.Resize`` on PIL images), ImageNet
normalisation; every one of these is checked against the release's
featurizer in the parity test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import ENCODER_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import (
    LAST,
    ImageNetEncoder,
    check_kernel,
    drop_unused,
    interleaved_clips,
    interleaved_frame_index,
    pad_clip,
    round_up,
    run_tapped,
    snap_hw,
    start_extract,
    tokens_to_grid,
    tubelet_index,
)
from vidprobe.backbones.loading import freeze
from vidprobe.backbones.model_vjepa import VJEPAEncoder

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/jepa/{name}/{name}.pth.tar"
REFERENCE_HW = (480, 832)
REFERENCE_CLIPS = 5
CHECKPOINT_KEYS = ("encoder", "target_encoder")

# variant -> architecture (trained with 16-frame clips, tubelet 2, patch 16)
VARIANTS: dict[str, dict[str, Any]] = {
    "vitl16": dict(embed_dim=1024, depth=24, num_heads=16, img_size=224),
    "vith16": dict(embed_dim=1280, depth=32, num_heads=16, img_size=224),
    "vith16-384": dict(embed_dim=1280, depth=32, num_heads=16, img_size=384),
}
TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=32, num_frames=4)


def build_encoder(variant: str, tiny: bool = False, **overrides) -> VJEPAEncoder:
    if variant not in VARIANTS:
        raise ValueError(f"unknown V-JEPA variant {variant!r}; known: {', '.join(VARIANTS)}")
    kw = dict(VARIANTS[variant])
    if tiny:
        kw.update(TINY)
    kw.update(overrides)
    return VJEPAEncoder(**kw)


# ------------------------------------------------------------------ loading
def _strip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_vjepa_state_dict(source: str | Path, key: str = "target_encoder") -> dict[str, torch.Tensor]:
    """Encoder weights from an official checkpoint (local path or http(s) URL) or a safetensors file.

    Takes ``checkpoint[key]`` (``key`` in :data:`CHECKPOINT_KEYS`; a checkpoint
    holding encoders but not ``key`` is refused, never silently swapped), or
    the file itself when it already is a flat state dict; strips ``module.``
    and ``backbone.`` prefixes.
    """
    if key not in CHECKPOINT_KEYS:
        raise ValueError(f"V-JEPA: checkpoint_key must be one of {', '.join(CHECKPOINT_KEYS)}, got {key!r}")
    src = str(source)
    if src.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj: Any = load_file(src)
    elif src.startswith(("http://", "https://")):
        obj = torch.hub.load_state_dict_from_url(src, map_location="cpu", weights_only=True, check_hash=False)
    else:
        if not Path(src).is_file():
            raise FileNotFoundError(f"V-JEPA checkpoint not found: {src}")
        obj = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{src}: expected a checkpoint dict, got {type(obj).__name__}")
    entries = [k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), dict)]
    if entries:
        if key not in entries:
            raise ValueError(f"{src}: no {key!r} entry in the checkpoint (it has {', '.join(entries)}); "
                             f"set checkpoint_key to one of those")
        obj = obj[key]
    sd = _strip({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
    if "patch_embed.proj.weight" not in sd:
        raise ValueError(f"{src}: no V-JEPA encoder weights found (no 'patch_embed.proj.weight' under {key!r})")
    return sd


def load_into(model: VJEPAEncoder, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shape:
        raise ValueError(
            f"{source}: does not match the V-JEPA variant: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shape[:5]} (checkpoint vs model)"
        )
    model.load_state_dict(sd, strict=True, assign=model.pos_embed.device.type == "meta")


# ------------------------------------------------------------------ adapter
class VJEPABackbone(ImageNetEncoder):
    def __init__(
        self,
        spec: BackboneSpec,
        model: VJEPAEncoder,
        input_hw: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
        num_clips: int = REFERENCE_CLIPS,
        clips_per_batch: int = 1,
        model_id: str | None = None,
        resize: str = "bilinear",
    ):
        self.spec = spec
        self.model = model
        self.input_hw = snap_hw(input_hw, model.patch_size)
        self.device, self.dtype = device, dtype
        self.num_clips = int(num_clips)
        self.clips_per_batch = max(1, int(clips_per_batch))
        self.model_id = model_id
        self.resize = check_kernel(resize, spec.name)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def clips(self, T: int) -> list[list[int]]:
        """Frame indices of each (padded) clip fed to the encoder."""
        clips = interleaved_clips(T, self.num_clips)
        L = round_up(max(len(c) for c in clips), self.model.tubelet_size)
        return [pad_clip(c, L) for c in clips]

    def frame_index(self, T: int) -> torch.Tensor:
        clips = self.clips(T)
        tub = self.model.tubelet_size
        return interleaved_frame_index(T, self.num_clips, lambda L: tubelet_index(L, tub), len(clips[0]) // tub)

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        T = video.shape[0]
        frames = self.preprocess(video)  # [T,3,H,W]
        clips = self.clips(T)
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        for s in range(0, len(clips), self.clips_per_batch):
            batch = clips[s : s + self.clips_per_batch]
            x = torch.stack([frames[c] for c in batch]).permute(0, 2, 1, 3, 4)  # [B,3,L,H,W]
            t, h, w = self.model.token_grid(x)
            toks = run_tapped(
                self.blocks, resolved, lambda x=x: self.model(x), final=self.model.norm
            )
            for req, tok in toks.items():
                parts[req].append(tokens_to_grid(tok, t, h, w).float().cpu())
        fi = self.frame_index(T)
        maps = {}
        for req, v in parts.items():
            m, idx = drop_unused(torch.cat(v), fi)
            maps[(req, None)] = m
        info = {"input_hw": self.input_hw, "grid": (h, w), "layout": self.spec.frame_layout,
                "clips": clips, "model_id": self.model_id, "resize": self.resize}
        return FeatureSet(maps=maps, frame_index=idx, info=info)


@dataclass(frozen=True)
class VJEPAOptions:
    """V-JEPA's own build options."""

    num_clips: int = REFERENCE_CLIPS  # interleaved clips that all start with frame 0
    clips_per_batch: int = 1  # clips per encoder pass
    #: which encoder of the checkpoint: ``target_encoder`` (the EMA encoder) or ``encoder`` (what the release loads)
    checkpoint_key: str = "target_encoder"


def make(ctx: BuildContext, own: VJEPAOptions) -> VJEPABackbone:
    """V-JEPA encoder: official weights from ``model_id`` (path or URL; default: facebookresearch/jepa's download URL) or random.

    ``resize``: frame resize kernel (:mod:`vidprobe.backbones.resize`; the
    study's release: ``pil-bilinear``). ``checkpoint_key``: which encoder of
    the checkpoint to load, ``target_encoder`` (default, the EMA encoder) or
    ``encoder`` (what the study's release loads).
    """
    if own.checkpoint_key not in CHECKPOINT_KEYS:
        raise ValueError(f"{ctx.name}: checkpoint_key must be one of {', '.join(CHECKPOINT_KEYS)}, "
                         f"got {own.checkpoint_key!r}")
    if ctx.options.revision is not None:
        raise ValueError(f"{ctx.name}: V-JEPA checkpoints are plain files; 'revision' does not apply")
    overrides = ctx.options.config_overrides or {}
    if ctx.random:
        with ctx.seeded():
            model = build_encoder(ctx.variant, tiny=ctx.tiny, **overrides)
    else:
        sd = load_vjepa_state_dict(ctx.model_id, key=own.checkpoint_key)
        with torch.device("meta"):  # no random init of weights that are about to be replaced
            model = build_encoder(ctx.variant, **overrides)
        load_into(model, sd, source=str(ctx.model_id))
    model = freeze(model.to(device=ctx.device, dtype=ctx.dtype))
    return VJEPABackbone(ctx.spec, model, ctx.input_hw(), ctx.device, ctx.dtype, num_clips=own.num_clips,
                         clips_per_batch=own.clips_per_batch, model_id=ctx.loaded_id, resize=ctx.options.resize)


FAMILY = Family("vjepa", make, options=ENCODER_OPTIONS + ("resize",), own=VJEPAOptions)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, arch in VARIANTS.items():
        ref = variant == "vith16-384"
        spec = BackboneSpec(
            name=f"vjepa-{variant}",
            family="vjepa",
            model_id=CHECKPOINT_URL.format(name=variant),
            num_layers=arch["depth"],
            default_layer=arch["depth"] if ref else LAST,  # reference: the last block before the final norm
            input_hw=REFERENCE_HW,
            num_frames=76,
            frame_layout=f"interleaved {REFERENCE_CLIPS} clips from frame 0, tubelet 2",
            extras=None,
            description=f"V-JEPA ViT-{'H' if 'vith' in variant else 'L'}/16 ({arch['img_size']}), C={arch['embed_dim']}"
            + (f" (reference: block {arch['depth']} before the final norm, 832x480, 5x16 frames)" if ref else ""),
        )
        FAMILY.register(spec, variant)
