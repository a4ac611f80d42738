"""V-JEPA (the original 2024 release: ViT-L/16, ViT-H/16, ViT-H/16-384), a compact own encoder.

No maintained installable package ships the original V-JEPA encoder (the PyPI
forks pull pinned torchvision/decord/pandas and training code), and
transformers' ``VJEPA2Model`` uses RoPE while V-JEPA 1 uses fixed 3D sin-cos
position embeddings, so this module implements the encoder itself with the
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

import functools
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.backbones.base import BackboneSpec, FeatureSet, register
from vidprobe.backbones.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAST,
    both_or_neither,
    check_kernel,
    check_timesteps,
    check_video,
    drop_unused,
    interleaved_clips,
    interleaved_frame_index,
    pad_clip,
    prepare_frames,
    resolve_device,
    resolve_dtype,
    resolve_layers,
    round_up,
    run_tapped,
    seeded,
    snap_hw,
    tokens_to_grid,
    tubelet_index,
)

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


# ------------------------------------------------------------------ position
def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``[M] -> [M, dim]``: [sin(pos*w_i), cos(pos*w_i)], w_i = 10000^(-i/(dim/2))."""
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    ang = pos.to(torch.float64).reshape(-1, 1) * omega[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def sincos_3d(dim: int, depth: int, height: int, width: int, uniform_power: bool = True) -> torch.Tensor:
    """Fixed 3D position table ``[depth*height*width, dim]`` (time-major), parts [t | h | w].

    ``uniform_power``: each axis gets ``2*ceil(dim/6)`` channels (then cut to
    ``dim``); otherwise time gets dim/2 and rows/columns dim/4 each.
    """
    if uniform_power:
        dt = dh = dw = int(math.ceil(dim / 6) * 2)
    else:
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    t, h, w = torch.meshgrid(
        torch.arange(depth), torch.arange(height), torch.arange(width), indexing="ij"
    )
    emb = torch.cat([sincos_1d(dt, t), sincos_1d(dh, h), sincos_1d(dw, w)], dim=1)
    return emb[:, :dim].float()


# ------------------------------------------------------------------ modules
class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,T,H,W] -> [B, N, D]
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VJEPAEncoder(nn.Module):
    """The V-JEPA video ViT encoder (pre-norm blocks, fixed 3D sin-cos positions, final LayerNorm)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        uniform_power: bool = True,
        eps: float = 1e-6,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.embed_dim = embed_dim
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        if self.pos_embed.device.type != "meta":
            self._init_weights(uniform_power, init_std)

    @torch.no_grad()
    def _init_weights(self, uniform_power: bool, std: float) -> None:
        self.pos_embed.copy_(sincos_3d(self.embed_dim, *self.grid, uniform_power=uniform_power)[None])
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.blocks, start=1):  # depth-scaled residual projections
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def pos_embed_for(self, t: int, h: int, w: int) -> torch.Tensor:
        """Position table for a ``t x h x w`` token grid: trilinear from the trained grid."""
        if (t, h, w) == self.grid:
            return self.pos_embed
        T0, H0, W0 = self.grid
        table = self.pos_embed.reshape(1, T0, H0, W0, -1).permute(0, 4, 1, 2, 3)
        table = F.interpolate(table, size=(t, h, w), mode="trilinear", align_corners=False)
        return table.permute(0, 2, 3, 4, 1).reshape(1, t * h * w, -1)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        _, _, T, H, W = x.shape
        return T // self.tubelet_size, H // self.patch_size, W // self.patch_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,T,H,W]`` (normalised) -> tokens + positions ``[B, N, D]``."""
        return self.patch_embed(x) + self.pos_embed_for(*self.token_grid(x)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


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
class VJEPABackbone:
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

    @property
    def num_layers(self) -> int:
        return len(self.model.blocks)

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``[T,3,H,W]`` in [0,1] -> normalised frames ``[T,3,h,w]`` at the input size (on the model's device)."""
        return prepare_frames(video, self.input_hw, IMAGENET_MEAN, IMAGENET_STD, self.device, self.dtype,
                              kernel=self.resize)

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
        who = self.spec.name
        check_video(video, who)
        check_timesteps(timesteps, who)
        resolved = resolve_layers(layers, self.num_layers, who)
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
    num_clips: int = REFERENCE_CLIPS,
    clips_per_batch: int = 1,
    resize: str = "bilinear",
    checkpoint_key: str = "target_encoder",
) -> VJEPABackbone:
    """V-JEPA encoder: official weights from ``model_id`` (path or URL; default: facebookresearch/jepa's download URL) or random.

    ``resize``: frame resize kernel (:mod:`vidprobe.backbones.resize`; the
    study's release: ``pil-bilinear``). ``checkpoint_key``: which encoder of
    the checkpoint to load, ``target_encoder`` (default, the EMA encoder) or
    ``encoder`` (what the study's release loads).
    """
    check_kernel(resize, spec.name)
    if checkpoint_key not in CHECKPOINT_KEYS:
        raise ValueError(f"{spec.name}: checkpoint_key must be one of {', '.join(CHECKPOINT_KEYS)}, "
                         f"got {checkpoint_key!r}")
    if revision is not None:
        raise ValueError(f"{spec.name}: V-JEPA checkpoints are plain files; 'revision' does not apply")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    hw = both_or_neither(height, width, spec.name) or spec.input_hw
    random_init = random_init or tiny
    src = None
    if random_init:
        with seeded(seed):
            model = build_encoder(variant, tiny=tiny, **(config_overrides or {}))
    else:
        src = model_id or spec.model_id
        sd = load_vjepa_state_dict(src, key=checkpoint_key)
        with torch.device("meta"):  # no random init of weights that are about to be replaced
            model = build_encoder(variant, **(config_overrides or {}))
        load_into(model, sd, source=str(src))
    model = model.to(device=dev, dtype=dt).eval()
    model.requires_grad_(False)
    return VJEPABackbone(spec, model, hw, dev, dt, num_clips=num_clips, clips_per_batch=clips_per_batch, model_id=src,
                         resize=resize)


def _register() -> None:
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
        register(spec, functools.partial(build, spec, variant))


_register()
