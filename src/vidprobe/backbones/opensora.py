"""Open-Sora 2.0 (11B MMDiT, HunyuanVideo VAE), loaded from the official checkpoint.

Why an own implementation
-------------------------
The denoiser is Flux-like (19 double-stream blocks, then 38 single-stream
blocks, C = 3072, 24 heads of 128, RoPE axes (16, 56, 56)) but it does **not**
match diffusers' ``FluxTransformer2DModel`` block for block: it was trained
with Liger's *rotate-half* RoPE (``use_liger_rope=True``) where Flux uses
interleaved pairs, its single-stream blocks fuse ``v`` with the MLP input
(``v_mlp``; ``fused_qkv=False``), and it adds a zero-initialised ``cond_in``
projection of the image-to-video condition. :class:`OpenSoraMMDiT` is a
compact re-implementation whose parameter names and shapes are exactly those
of the official ``Open_Sora_v2.safetensors`` (upstream
``opensora/models/mmdit/{model,layers,math}.py`` with the 11B config of
``configs/diffusion/inference/256px.py``: in_channels 64, vec_in_dim 768,
context_in_dim 4096, hidden 3072, mlp_ratio 4, heads 24, depth 19,
depth_single_blocks 38, axes_dim (16, 56, 56), theta 10000, qkv_bias,
cond_embed, no guidance embedding, fused_qkv False). ``tests/fixtures/
opensora2_keys.json`` lists those tensors; a test compares the meta-device
full-size model with it. The checkpoint loads with ``strict=True``.

The VAE is the HunyuanVideo VAE; its original key names equal diffusers'
``AutoencoderKLHunyuanVideo`` (diffusers' conversion script maps them 1:1), so
``hunyuan_vae.safetensors`` loads strictly into the diffusers class
(scaling factor 0.476986, shift 0; 4x time, 8x space, 16 channels).

Extraction (the reference's ``opensora_features.py`` setting)
-------------------------------------------------------------
* 81 frames at 480x848 -> latents ``[16, 21, 60, 106]`` -> packed 2x2 tokens
  ``21 x 30 x 53``, C = 3072; frame ``t`` -> latent ``floor((t-1)/4)+1``
  (frame 0 -> 0).
* Latents: ``scaling_factor * posterior.mode()``. (The reference calls the
  upstream ``encode`` which *samples* the posterior; the mode is used here so
  features are deterministic. With the HunyuanVideo VAE's small posterior
  variance the difference is minor, but it is a difference.)
* Image-to-video condition, once per clip: the first frame alone is
  VAE-encoded into latent frame 0 (other latent frames zero) and a mask
  channel (1 at latent frame 0) is put in front: 17 channels, packed to 68
  and fed through ``cond_in`` (added to ``img_in(x_t)``).
* Text: empty prompt; T5-XXL ``last_hidden_state`` padded to 512 tokens
  (no attention mask, as upstream) and CLIP-L ``pooler_output`` (77 tokens),
  both cached on disk (see :mod:`vidprobe.backbones.diffusion`).
* Noise (upstream flow matching with ``sigma_min = 1e-5``): for tau the
  model time is ``t = shift(tau) = a tau / (1 + (a - 1) tau)`` with the
  resolution-dependent ``a = (1 + (w h / 4 - 256) * 2 / 3840) * sqrt(F)``
  (``w, h, F``: latent width, height, frames; ``w h / 4`` integer-divided)
  and ``x_t = (1 - t) x_0 + (1 - (1 - sigma_min)(1 - t)) noise``. The
  denoiser receives ``t`` (its embedding multiplies by 1000). For 81 frames
  at 480x848, ``a = 7.7665`` and tau 0.25 -> ``t = 0.7214``: the features
  are read at high noise. ``info["time_shift"]`` records ``a``.
* Timestep forms as everywhere in vidprobe: scheduler index ``i`` with
  ``tau = 1 - i/1000`` (the index 750 *is* tau 0.25 exactly here, and is the
  registered default, since the feature store keys timesteps by index).

Layers
------
vidprobe layers are 1-based block outputs counted **double-stream blocks
first, then single-stream blocks**: layers 1..19 are ``double_blocks[0..18]``
(image stream output), layers 20..57 are ``single_blocks[0..37]`` (image
tokens of the joint sequence). The reference's single-stream block 20
(0-based) is therefore layer ``19 + 20 + 1 = 40``, the registered default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.backbones.base import BackboneSpec, MissingExtraError, register
from vidprobe.backbones.common import (
    both_or_neither,
    check_video,
    pad_clip,
    resolve_device,
    resolve_dtype,
    seeded,
    vae4x_index,
)
from vidprobe.backbones.diffusion import (
    NUM_INFERENCE_STEPS,
    ClipLatents,
    DiffusionBackbone,
    _cast,
    empty_prompt_embeds,
    vae4x_length,
)

MODEL_ID = "hpcai-tech/Open-Sora-v2"
CHECKPOINT_FILE = "Open_Sora_v2.safetensors"
VAE_FILE = "hunyuan_vae.safetensors"
T5_SUBFOLDER = "google/t5-v1_1-xxl"
CLIP_SUBFOLDER = "openai/clip-vit-large-patch14"
T5_MAX_LENGTH = 512
CLIP_MAX_LENGTH = 77
REFERENCE_HW = (480, 848)
REFERENCE_FRAMES = 81
REFERENCE_SINGLE_BLOCK = 20  # 0-based index into single_blocks
SIGMA_MIN = 1e-5
PATCH = 2
VAE_SCALING = 0.476986


# ====================================================================== model
@dataclass
class MMDiTConfig:
    """The upstream ``MMDiTConfig`` fields that shape the weights (defaults: the 11B Open-Sora 2.0 model)."""

    in_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: list[int] = field(default_factory=lambda: [16, 56, 56])
    theta: int = 10_000
    qkv_bias: bool = True
    cond_embed: bool = True
    patch_size: int = PATCH

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0, time_factor: float = 1000.0):
    """Sinusoidal embedding of ``t`` in [0,1] (scaled by 1000), cos half first (upstream/Flux convention)."""
    t = time_factor * t.float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_cos_sin(ids: torch.Tensor, axes_dim: Sequence[int], theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B,L,n_axes]`` -> rotate-half ``cos, sin [B,1,L,D]`` (per-axis frequencies concatenated, then repeated twice)."""
    angles = []
    for i, d in enumerate(axes_dim):
        omega = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=ids.device) / d))
        angles.append(ids[..., i].float()[..., None] * omega)
    a = torch.cat(angles, dim=-1)  # [B, L, D/2]
    cos, sin = a.cos().repeat(1, 1, 2), a.sin().repeat(1, 1, 2)
    return cos[:, None], sin[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B,H,L,D]``: ``x cos + rotate_half(x) sin`` (Liger / LLaMA layout), computed in fp32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rot * sin).to(x.dtype)


def attention(q, k, v, pe) -> torch.Tensor:
    """``q,k,v [B,H,L,D]`` -> ``[B,L,H*D]`` (full attention, no mask)."""
    cos, sin = pe
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    x = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (y * self.scale.float()).to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q, k):
        return self.query_norm(q), self.key_norm(k)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x):
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """``lin(silu(vec))`` split into (shift, scale, gate) x (2 if double else 1)."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.n = 6 if double else 3
        self.lin = nn.Linear(dim, self.n * dim)

    def forward(self, vec):
        return self.lin(F.silu(vec))[:, None, :].chunk(self.n, dim=-1)


class SelfAttention(nn.Module):
    """Unfused q/k/v projections (``fused_qkv=False``), per-head QK RMSNorm, output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def qkv(self, x):
        B, L, _ = x.shape
        q, k, v = (p(x).view(B, L, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.norm(q, k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class DoubleStreamBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.img_mod = Modulation(dim, double=True)
        self.img_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(dim, num_heads, qkv_bias)
        self.img_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_mlp = _mlp(dim, hidden)
        self.txt_mod = Modulation(dim, double=True)
        self.txt_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(dim, num_heads, qkv_bias)
        self.txt_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = _mlp(dim, hidden)

    def forward(self, img, txt, vec, pe):
        i_sh1, i_sc1, i_g1, i_sh2, i_sc2, i_g2 = self.img_mod(vec)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(vec)
        iq, ik, iv = self.img_attn.qkv((1 + i_sc1) * self.img_norm1(img) + i_sh1)
        tq, tk, tv = self.txt_attn.qkv((1 + t_sc1) * self.txt_norm1(txt) + t_sh1)
        a = attention(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), pe)
        n_txt = txt.shape[1]
        t_a, i_a = a[:, :n_txt], a[:, n_txt:]
        img = img + i_g1 * self.img_attn.proj(i_a)
        img = img + i_g2 * self.img_mlp((1 + i_sc2) * self.img_norm2(img) + i_sh2)
        txt = txt + t_g1 * self.txt_attn.proj(t_a)
        txt = txt + t_g2 * self.txt_mlp((1 + t_sc2) * self.txt_norm2(txt) + t_sh2)
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP on the joint [txt, img] sequence; ``v`` fused with the MLP input (``v_mlp``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.mlp_hidden_dim = int(dim * mlp_ratio)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_mlp = nn.Linear(dim, dim + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(dim + self.mlp_hidden_dim, dim)
        self.norm = QKNorm(dim // num_heads)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = Modulation(dim, double=False)

    def forward(self, x, vec, pe):
        shift, scale, gate = self.modulation(vec)
        xm = (1 + scale) * self.pre_norm(x) + shift
        B, L, _ = xm.shape
        q = self.q_proj(xm).view(B, L, self.num_heads, -1)
        k = self.k_proj(xm).view(B, L, self.num_heads, -1)
        v, mlp = torch.split(self.v_mlp(xm), [self.dim, self.mlp_hidden_dim], dim=-1)
        q, k = self.norm(q, k)
        v = v.reshape(B, L, self.num_heads, -1)
        a = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), pe)
        return x + gate * self.linear2(torch.cat([a, F.gelu(mlp, approximate="tanh")], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None]) * self.norm_final(x) + shift[:, None])


class OpenSoraMMDiT(nn.Module):
    """Open-Sora 2.0's MMDiT with the official parameter names (see the module docstring).

    ``forward(img, img_ids, txt, txt_ids, timesteps, y_vec, cond)`` as upstream:
    ``img [B,N,in_channels]`` packed latents, ``txt [B,L,context_in_dim]``,
    ``timesteps [B]`` in [0,1], ``y_vec [B,vec_in_dim]``, ``cond
    [B,N,in_channels+patch^2]``; returns the velocity ``[B,N,in_channels]``.

    ``tap_points`` (length ``depth + depth_single_blocks``) are the modules
    whose forward output is the image-token stream after each block, in
    vidprobe layer order: the double blocks themselves (output ``(img, txt)``)
    and parameter-free identity taps that receive the image part of the joint
    sequence after each single block.
    """

    def __init__(self, config: MMDiTConfig | None = None):
        super().__init__()
        c = config or MMDiTConfig()
        if c.hidden_size % c.num_heads:
            raise ValueError(f"hidden_size {c.hidden_size} not divisible by num_heads {c.num_heads}")
        if sum(c.axes_dim) != c.hidden_size // c.num_heads:
            raise ValueError(f"axes_dim {c.axes_dim} must sum to the head dim {c.hidden_size // c.num_heads}")
        self.config = c
        d = c.hidden_size
        self.img_in = nn.Linear(c.in_channels, d)
        self.time_in = MLPEmbedder(256, d)
        self.vector_in = MLPEmbedder(c.vec_in_dim, d)
        self.cond_in = nn.Linear(c.in_channels + c.patch_size**2, d) if c.cond_embed else None
        self.txt_in = nn.Linear(c.context_in_dim, d)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(d, c.num_heads, c.mlp_ratio, c.qkv_bias) for _ in range(c.depth)
        )
        self.single_blocks = nn.ModuleList(SingleStreamBlock(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth_single_blocks))
        self.single_taps = nn.ModuleList(nn.Identity() for _ in range(c.depth_single_blocks))
        self.final_layer = LastLayer(d, c.in_channels)

    @property
    def tap_points(self) -> list[nn.Module]:
        return list(self.double_blocks) + list(self.single_taps)

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None):
        if img.dim() != 3 or txt.dim() != 3:
            raise ValueError("img and txt must be [B, L, C]")
        img = self.img_in(img)
        if self.cond_in is not None:
            if cond is None:
                raise ValueError("this model is image-conditioned (cond_embed): pass cond")
            img = img + self.cond_in(cond.to(img.dtype))
        vec = self.time_in(timestep_embedding(timesteps).to(img.dtype)) + self.vector_in(y_vec.to(img.dtype))
        txt = self.txt_in(txt.to(img.dtype))
        pe = rope_cos_sin(torch.cat([txt_ids, img_ids], dim=1), self.config.axes_dim, self.config.theta)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        n_txt = txt.shape[1]
        x = torch.cat([txt, img], dim=1)
        for block, tap in zip(self.single_blocks, self.single_taps):
            x = block(x, vec, pe)
            tap(x[:, n_txt:])
        return self.final_layer(x[:, n_txt:], vec)


def pack(x: torch.Tensor, p: int = PATCH) -> torch.Tensor:
    """``[B,C,T,H,W]`` -> ``[B, T*(H/p)*(W/p), C*p*p]`` (channel, then row, then column offset; upstream ``pack``)."""
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T, H // p, p, W // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(B, T * (H // p) * (W // p), C * p * p)


def unpack(x: torch.Tensor, T: int, h: int, w: int, p: int = PATCH) -> torch.Tensor:
    """Inverse of :func:`pack` for a ``T x h x w`` token grid."""
    B, _, D = x.shape
    C = D // (p * p)
    return x.reshape(B, T, h, w, C, p, p).permute(0, 4, 1, 2, 5, 3, 6).reshape(B, C, T, h * p, w * p)


def image_ids(T: int, h: int, w: int) -> torch.Tensor:
    """RoPE positions ``[1, T*h*w, 3]`` = (frame, row, column) of every token."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([t, y, x], dim=-1).reshape(1, -1, 3).float()


# ================================================================= time shift
def shift_alpha(latent_frames: int, latent_h: int, latent_w: int) -> float:
    """Upstream's resolution-dependent shift: linear in ``h*w//4`` (256 -> 1, 4096 -> 3) times ``sqrt(frames)``."""
    seq = (latent_w * latent_h) // 4
    m = (3.0 - 1.0) / (4096 - 256)
    return (m * seq + (1.0 - m * 256)) * math.sqrt(latent_frames)


def time_shift(alpha: float, t):
    return alpha * t / (1 + (alpha - 1) * t)


class OpenSoraFlowScheduler:
    """Open-Sora 2.0's flow-matching forward process behind the scheduler interface the diffusion core uses.

    After ``set_timesteps(N)``, ``timesteps[i] = 1000 * shift(1 - i/N)``
    (descending, index 0 = pure noise); ``scale_noise(x0, t, noise)`` is
    ``(1 - s) x0 + (1 - (1 - sigma_min)(1 - s)) noise`` with ``s = t/1000``;
    ``step`` is the Euler update ``x + (s_next - s) v`` used by upstream
    sampling (``s_next`` = the next entry of ``timesteps``, 0 after the last).
    ``alpha`` (the shift) is set from the latent grid with :meth:`set_grid`.
    """

    def __init__(self, alpha: float = 1.0, sigma_min: float = SIGMA_MIN, num_train_timesteps: int = 1000):
        self.alpha = float(alpha)
        self.sigma_min = float(sigma_min)
        self.config = SimpleNamespace(num_train_timesteps=int(num_train_timesteps), sigma_min=float(sigma_min))
        self.num_steps = NUM_INFERENCE_STEPS
        self.set_timesteps(self.num_steps)

    def set_grid(self, latent_frames: int, latent_h: int, latent_w: int) -> float:
        self.alpha = shift_alpha(latent_frames, latent_h, latent_w)
        self.set_timesteps(self.num_steps)
        return self.alpha

    def set_timesteps(self, num_steps: int, device: Any = "cpu") -> None:
        self.num_steps = int(num_steps)
        s = 1.0 - torch.arange(self.num_steps, dtype=torch.float64) / self.num_steps
        n = self.config.num_train_timesteps
        self.timesteps = (n * time_shift(self.alpha, s)).float().to(device)

    def scale_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        s = (t.double() / self.config.num_train_timesteps).reshape(-1).to(x0.device)
        s = s.view(-1, *([1] * (x0.dim() - 1))) if s.numel() > 1 else s.reshape(())
        a = (1.0 - s)
        b = 1.0 - (1.0 - self.sigma_min) * (1.0 - s)
        return (a * x0.double() + b * noise.double()).to(x0.dtype)

    def step(self, model_output, timestep, sample, return_dict: bool = False):
        ts = self.timesteps.to(torch.float64)
        i = int(torch.argmin((ts - float(timestep)).abs()))
        nxt = float(ts[i + 1]) if i + 1 < len(ts) else 0.0
        ds = (nxt - float(timestep)) / self.config.num_train_timesteps
        return (sample + ds * model_output,)


# ================================================================== backbone
def _diffusers():
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover
        raise MissingExtraError("diffusers", "hf") from e
    return diffusers


class OpenSoraBackbone(DiffusionBackbone):
    def __init__(self, *args, pooled_embeds: torch.Tensor, **kw):
        super().__init__(*args, **kw)
        if pooled_embeds.dim() == 3:
            pooled_embeds = pooled_embeds[:, 0]
        self.pooled_embeds = pooled_embeds.detach().cpu()
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", VAE_SCALING))

    @property
    def blocks(self):
        return self.transformer.tap_points

    def latent_grid(self, T: int) -> tuple[int, int, int]:
        """(latent frames, latent rows, latent columns) of a ``T``-frame video at the input size."""
        H, W = self.input_hw
        return (vae4x_length(T) - 1) // 4 + 1, H // 8, W // 8

    def clips(self, T: int) -> list[list[int]]:
        return [pad_clip(list(range(T)), vae4x_length(T))]

    def frame_index(self, T: int) -> torch.Tensor:
        return vae4x_index(T)

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]  # [1,3,L,H,W]
        x0 = self.vae_encode(x).float() * self.scaling_factor  # [1,16,F,h,w]
        B, _, Fr, h, w = x0.shape
        first = self.vae_encode(x[:, :, :1]).float() * self.scaling_factor  # the first frame alone
        lat = torch.zeros_like(x0)
        lat[:, :, :1] = first
        mask = torch.zeros(B, 1, Fr, h, w, device=x0.device)
        mask[:, :, 0] = 1.0
        cond = {
            "cond": pack(torch.cat([mask, lat], dim=1)),
            "img_ids": image_ids(Fr, h // PATCH, w // PATCH).to(x0.device),
        }
        return ClipLatents(latents=x0, grid=(Fr, h // PATCH, w // PATCH), cond=cond)

    def denoiser_forward(self, noisy, choice, cl):
        dev, dt = self.device, self.dtype
        txt = self.text_embeds.to(dev, dt)
        t = torch.tensor([choice.model_t / self.scheduler.config.num_train_timesteps], device=dev, dtype=torch.float32)
        out = self.transformer(
            img=pack(noisy).to(dev, dt), img_ids=cl.cond["img_ids"].to(dev), txt=txt,
            txt_ids=torch.zeros(1, txt.shape[1], 3, device=dev), timesteps=t,
            y_vec=self.pooled_embeds.to(dev, dt), cond=cl.cond["cond"].to(dev, dt),
        )
        Fr, h, w = cl.grid
        return (unpack(out, Fr, h, w),)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() / self.scaling_factor
        with self.vae_on_device() as vae:
            x = vae.decode(z.to(self.device, self.vae_dtype), return_dict=False)[0]
        return ((x[0].permute(1, 0, 2, 3).float() + 1) / 2).clamp(0, 1).cpu()

    def encode(self, video: torch.Tensor) -> list[ClipLatents]:
        self.scheduler.set_grid(*self.latent_grid(video.shape[0]))
        return super().encode(video)

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(750,), clip=None):
        check_video(video, self.spec.name)
        alpha = self.scheduler.set_grid(*self.latent_grid(video.shape[0]))  # before the timesteps are resolved
        fs = super().extract(video, layers, timesteps, clip)
        fs.info["time_shift"] = {
            "alpha": alpha,
            "sigma_min": self.scheduler.sigma_min,
            "formula": "t = a*tau/(1+(a-1)*tau); x_t = (1-t)*x0 + (1-(1-sigma_min)*(1-t))*noise",
            "latent_grid": self.latent_grid(video.shape[0]),
        }
        fs.info["layer_numbering"] = (
            f"1..{self.transformer.config.depth} double_blocks, then single_blocks: "
            f"layer = {self.transformer.config.depth} + single index (0-based) + 1"
        )
        return fs


# ==================================================================== loading
def official_key_shapes(config: MMDiTConfig | None = None) -> dict[str, list[int]]:
    """Names and shapes of the model's tensors (what ``state_dict()`` holds, in module order)."""
    with torch.device("meta"):
        m = OpenSoraMMDiT(config)
    return {k: list(v.shape) for k, v in m.state_dict().items()}


def _resolve_file(model_id: str, filename: str, revision: str | None) -> str:
    p = Path(model_id)
    if p.is_file():
        return str(p)
    if p.is_dir():
        f = p / filename
        if not f.is_file():
            raise FileNotFoundError(f"{p}: file {filename!r} not found")
        return str(f)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model_id, filename, revision=revision)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(path)
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_official(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Strict load with the official names; a mismatch raises naming the file and the offending keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or bad:
        raise ValueError(
            f"{source}: checkpoint does not match {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)}), "
            f"shape mismatch {bad[:5]} ({len(bad)})"
        )
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def load_transformer(model_id: str, revision: str | None, dtype: torch.dtype, filename: str = CHECKPOINT_FILE):
    path = _resolve_file(model_id, filename, revision)
    with torch.device("meta"):
        model = OpenSoraMMDiT(MMDiTConfig())
    sd = {k: v.to(dtype) for k, v in load_state_dict_file(path).items()}
    return load_official(model, sd, path)


def load_vae(model_id: str, revision: str | None, filename: str = VAE_FILE, config: dict | None = None):
    """HunyuanVideo VAE: the official ``hunyuan_vae.safetensors`` (original names = diffusers names) or a diffusers folder.

    ``config``: ``AutoencoderKLHunyuanVideo`` arguments (default: the class defaults, which are HunyuanVideo's).
    """
    d = _diffusers()
    p = Path(model_id)
    if p.is_dir() and (p / "vae" / "config.json").is_file():
        return d.AutoencoderKLHunyuanVideo.from_pretrained(str(p), subfolder="vae", torch_dtype=torch.float32)
    path = _resolve_file(model_id, filename, revision)
    vae = d.AutoencoderKLHunyuanVideo(**(config or {}))
    sd = {k: v.float() for k, v in load_state_dict_file(path).items()}
    return load_official(vae, sd, path)


def _text_source(model_id: str, subfolder: str, revision: str | None) -> tuple[str, dict]:
    """Where a text encoder lives: ``model_id/<subfolder>`` (the Open-Sora-v2 download layout) or the
    standalone hub repo of the same name (``google/t5-v1_1-xxl``, ``openai/clip-vit-large-patch14``)."""
    p = Path(model_id)
    if p.is_dir():
        if (p / subfolder / "config.json").is_file():
            return str(p / subfolder), {}
        return subfolder, {}
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(model_id, f"{subfolder}/config.json", revision=revision)
        return model_id, {"subfolder": subfolder, "revision": revision}
    except Exception:  # noqa: BLE001 - not in that repo: use the standalone one
        return subfolder, {}


def compute_empty_t5(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """T5-XXL ``last_hidden_state`` of the empty prompt padded to 512 tokens, no attention mask (upstream HFEmbedder)."""
    from transformers import AutoTokenizer, T5EncoderModel

    repo, kw = _text_source(model_id, T5_SUBFOLDER, revision)
    tok = AutoTokenizer.from_pretrained(repo, **kw)
    enc = T5EncoderModel.from_pretrained(repo, dtype=dtype, **kw).to(device)
    ids = tok([""], truncation=True, max_length=T5_MAX_LENGTH, padding="max_length", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = enc(input_ids=ids.to(device), attention_mask=None).last_hidden_state.float().cpu()
    del enc
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def compute_empty_clip(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """CLIP-L ``pooler_output`` of the empty prompt (77 tokens), as ``[1, 1, 768]``."""
    from transformers import CLIPTextModel, CLIPTokenizer

    repo, kw = _text_source(model_id, CLIP_SUBFOLDER, revision)
    tok = CLIPTokenizer.from_pretrained(repo, **kw)
    enc = CLIPTextModel.from_pretrained(repo, dtype=dtype, **kw).to(device)
    ids = tok([""], truncation=True, max_length=CLIP_MAX_LENGTH, padding="max_length", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = enc(input_ids=ids.to(device), attention_mask=None).pooler_output.float().cpu()
    del enc
    return out[:, None]


TINY_TEXT = (8, 32)  # (tokens, dim) of the random T5 stand-in
TINY_POOLED = 16
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
    norm_num_groups=4, mid_block_add_attention=False,
)


def tiny_config(depth: int = 2, depth_single: int = 3) -> MMDiTConfig:
    return MMDiTConfig(
        in_channels=64, vec_in_dim=TINY_POOLED, context_in_dim=TINY_TEXT[1], hidden_size=32, mlp_ratio=2.0,
        num_heads=2, depth=depth, depth_single_blocks=depth_single, axes_dim=[4, 6, 6], theta=10_000,
    )


def randomize_(model: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """Seeded random values for every tensor (so zero-initialised parts such as ``cond_in`` are exercised too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.copy_(1.0 + std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model


def build(
    spec: BackboneSpec,
    model_id: str | None = None,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    tiny: bool = False,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    offload: bool = False,
    text_embeds: str | None = None,
    pooled_embeds: str | None = None,
    cache_dir: str | None = None,
    tiny_layers: int = 3,
    tiny_double: int = 2,
    vae_model_id: str | None = None,
) -> OpenSoraBackbone:
    """Open-Sora 2.0: the official checkpoint (``model_id`` = hub id, local folder or ``.safetensors``) or ``tiny``.

    ``text_embeds`` / ``pooled_embeds``: precomputed T5 / CLIP-pooled
    empty-prompt embeddings (safetensors); otherwise computed once and cached.
    ``vae_model_id``: where ``hunyuan_vae.safetensors`` (or a diffusers
    ``vae`` folder) lives, default ``model_id``.
    """
    d = _diffusers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    hw = both_or_neither(height, width, spec.name) or ((32, 48) if tiny else spec.input_hw)
    if tiny:
        with seeded(seed):
            transformer = randomize_(OpenSoraMMDiT(tiny_config(tiny_double, tiny_layers)), seed)
            vae = d.AutoencoderKLHunyuanVideo(**TINY_VAE)
            emb = torch.randn(1, *TINY_TEXT)
            pooled = torch.randn(1, TINY_POOLED)
        transformer = _cast(transformer, dt)
        mid = None
    else:
        mid = model_id or spec.model_id
        transformer = load_transformer(mid, revision, dt)
        vae = load_vae(vae_model_id or mid, revision if vae_model_id is None else None)
        if dev.type == "cuda":
            vae.enable_tiling()  # the reference encodes with spatial tiling too
        emb = empty_prompt_embeds(
            f"{mid}#t5", revision, lambda: compute_empty_t5(mid, revision, dev, dt), cache_dir, text_embeds
        )
        pooled = empty_prompt_embeds(
            f"{mid}#clip", revision, lambda: compute_empty_clip(mid, revision, dev, dt), cache_dir, pooled_embeds
        )
    return OpenSoraBackbone(
        spec, transformer, vae, OpenSoraFlowScheduler(), emb, hw, dev, dt,
        vae_dtype=torch.float32, seed=seed, offload=offload, model_id=mid, revision=revision, pooled_embeds=pooled,
    )


DEPTH_DOUBLE = MMDiTConfig().depth
DEPTH_SINGLE = MMDiTConfig().depth_single_blocks
DEFAULT_LAYER = DEPTH_DOUBLE + REFERENCE_SINGLE_BLOCK + 1  # 40
DEFAULT_INDEX = 750  # tau = 1 - 750/1000 = 0.25 exactly (before the time shift)


def _register() -> None:
    spec = BackboneSpec(
        name="opensora2",
        family="opensora",
        model_id=MODEL_ID,
        num_layers=DEPTH_DOUBLE + DEPTH_SINGLE,
        default_layer=DEFAULT_LAYER,
        input_hw=REFERENCE_HW,
        num_frames=REFERENCE_FRAMES,
        frame_layout="vae4x",
        default_timestep=DEFAULT_INDEX,
        extras="hf",
        description=(
            "Open-Sora 2.0 11B MMDiT (19 double + 38 single blocks, C=3072), HunyuanVideo VAE, I2V first-frame "
            "condition, empty prompt (T5-XXL + CLIP-L); reference: single-stream block 20 (0-based) = layer 40, "
            "tau 0.25 (index 750) with the resolution-dependent time shift, 81 frames 848x480 -> 21x30x53"
        ),
    )
    register(spec, functools.partial(build, spec))


_register()
