"""Open-Sora 2.0 (11B MMDiT, HunyuanVideo VAE), loaded from the official checkpoint.

The denoiser is :class:`vidprobe.backbones.transformer_opensora.OpenSoraMMDiT`
(our own network with the official tensor names; the checkpoint loads with
``strict=True``). The VAE is the HunyuanVideo VAE; its original key names
equal diffusers' ``AutoencoderKLHunyuanVideo`` (diffusers' conversion maps
them 1:1), so ``hunyuan_vae.safetensors`` loads strictly into the diffusers
class (scaling factor 0.476986, shift 0; 4x time, 8x space, 16 channels).
Both claims, and the whole extraction below, are checked against the study's
release (VidFM3D ``features/opensora/opensora_features.py``) by
``tests/test_parity_opensora.py`` on a fixture made by the release's own code
(``tools/parity/opensora_mmdit.py``). The schedule lives in
:mod:`vidprobe.backbones.scheduler_opensora`, the loaders of the official files
in :mod:`vidprobe.backbones.loading_opensora`; both are importable from here.

Extraction
----------
* Frames are resized to 480x848 (``resize``; the release: PIL bicubic on the
  8-bit frames, ``resize="pil-bicubic"``) and mapped to [-1, 1].
* ``T`` frames (padded to ``4k+1``) -> latents ``[16, F, 60, 106]``, ``F =
  (T-1)/4 + 1`` -> packed 2x2 tokens ``F x 30 x 53``, C = 3072; frame ``t``
  -> latent ``floor((t-1)/4)+1`` (frame 0 -> 0). The release feeds 129 frames
  on DL3DV (``F = 33``; set ``num_frames: 129`` in the sweep) and keeps the
  first 21 maps; here every map is kept (a FeatureSet serves every fed frame).
* The VAE encodes the whole clip at once (``vae_framewise=False``; diffusers'
  default would encode 16-frame temporal tiles) with 256-px spatial tiles,
  stride 192 (``vae_spatial_tiling=True``), as the release's config
  (``use_spatial_tiling=True``, ``use_temporal_tiling=False``, sample size 256,
  overlap 0.25). Latents ``x0 = 0.476986 * z`` with ``z`` the posterior mode
  (``latents="mode"``) or a seeded posterior sample (``latents="sample"``, the
  release: it calls ``encode`` with ``sample_posterior=True``).
* Image-to-video condition, once per clip: the first frame alone is
  VAE-encoded into latent frame 0 (other latent frames zero) and a mask
  channel (1 at latent frame 0) is put in front: 17 channels, packed to 68
  and fed through ``cond_in`` (added to ``img_in(x_t)``).
* Text: empty prompt; T5-XXL ``last_hidden_state`` padded to 512 tokens
  (no attention mask) and CLIP-L ``pooler_output`` (77 tokens), both cached on
  disk (see :mod:`vidprobe.backbones.diffusion`).
* Noise (flow matching, ``sigma_min = 1e-5``): for tau the model time is
  ``t = shift(tau) = a tau / (1 + (a - 1) tau)`` with the resolution-dependent
  ``a = (1 + (w h // 4 - 256) * 2 / 3840) * sqrt(F)`` over the latent grid
  actually fed (``w, h, F``: latent width, height, frames) and ``x_t = (1 - t)
  x_0 + (1 - (1 - sigma_min)(1 - t)) noise``; the denoiser receives ``t``.
  ``schedule_dtype`` is the dtype of that arithmetic (tau, t, the mix and the
  timestep fed): the release computes it in its compute dtype, bf16. For 81
  frames at 480x848 ``a = 7.7665`` and tau 0.25 -> ``t = 0.7214`` (bf16:
  0.72265625); for 129 frames ``a = 9.7360``, ``t = 0.7645`` (bf16: 0.765625).
  ``info["time_shift"]`` records ``a``.
* Timestep forms as everywhere in vidprobe: scheduler index ``i`` with
  ``tau = 1 - i/1000`` (index 750 *is* tau 0.25 exactly, the registered
  default; the feature store keys timesteps by index).

Layers
------
vidprobe layers are 1-based block outputs counted **double-stream blocks
first, then single-stream blocks**: layers 1..19 are ``double_blocks[0..18]``
(image stream output), layers 20..57 are ``single_blocks[0..37]`` (image
tokens of the joint sequence). The release's single-stream block 20 (0-based,
``model.single_blocks[20]``, tokens after the 512 text tokens) is therefore
layer ``19 + 20 + 1 = 40``, the registered default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import (
    check_kernel,
    check_video,
    pad_clip,
    require_diffusers,
    resize_video,
    resolve_dtype,
    vae4x_index,
)
from vidprobe.backbones.diffusion import (
    NUM_INFERENCE_STEPS,
    ClipLatents,
    DiffusionBackbone,
    _cast,
    make_noise,
    noise_seed,
    vae4x_length,
)
from vidprobe.backbones.diffusion_build import DiffusionParts, make_diffusion, prompt_embedding
from vidprobe.backbones.transformer_opensora import (  # noqa: F401 (re-exported: the public API of this module)
    PATCH,
    MMDiTConfig,
    OpenSoraMMDiT,
    apply_rope,
    attention,
    image_ids,
    official_key_shapes,
    pack,
    rope_cos_sin,
    timestep_embedding,
    unpack,
)

from vidprobe.backbones.loading_opensora import (  # noqa: F401 (re-exported)
    CHECKPOINT_FILE,
    CLIP_MAX_LENGTH,
    CLIP_SUBFOLDER,
    T5_MAX_LENGTH,
    T5_SUBFOLDER,
    VAE_FILE,
    compute_empty_clip,
    compute_empty_t5,
    load_official,
    load_state_dict_file,
    load_transformer,
    load_vae,
)
from vidprobe.backbones.scheduler_opensora import (  # noqa: F401 (re-exported)
    SCHEDULE_DTYPES,
    SIGMA_MIN,
    OpenSoraFlowScheduler,
    schedule_dtype_of,
    shift_alpha,
    time_shift,
)

MODEL_ID = "hpcai-tech/Open-Sora-v2"
REFERENCE_HW = (480, 848)
REFERENCE_FRAMES = 81
REFERENCE_SINGLE_BLOCK = 20  # 0-based index into single_blocks
VAE_SCALING = 0.476986
VAE_TILE, VAE_TILE_STRIDE = 256, 192  # the release's sample_size 256, tile_overlap_factor 0.25
LATENT_MODES = ("mode", "sample")
POSTERIOR_DRAW = {"clip": 0, "first_frame": 1}


# ================================================================== backbone
def posterior_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The standard-normal draw of a posterior sample (CPU generator: the same on every device)."""
    return make_noise(shape, seed)


def configure_vae_tiling(vae: nn.Module, spatial: bool, framewise: bool, tile: int = VAE_TILE,
                         stride: int = VAE_TILE_STRIDE) -> nn.Module:
    """Set diffusers' ``AutoencoderKLHunyuanVideo`` tiling: spatial tiles of ``tile`` px every ``stride`` px
    (blended, as the release's ``spatial_tiled_encode``), and 16-frame temporal tiles only with ``framewise``."""
    vae.use_framewise_encoding = bool(framewise)
    vae.use_framewise_decoding = bool(framewise)
    vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile, tile_sample_stride_height=stride,
                      tile_sample_stride_width=stride)
    vae.use_tiling = bool(spatial)
    return vae


class OpenSoraBackbone(DiffusionBackbone):
    def __init__(self, *args, pooled_embeds: torch.Tensor, resize: str = "bilinear", latents: str = "mode", **kw):
        super().__init__(*args, **kw)
        if pooled_embeds.dim() == 3:
            pooled_embeds = pooled_embeds[:, 0]
        self.pooled_embeds = pooled_embeds.detach().cpu()
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", VAE_SCALING))
        self.resize = check_kernel(resize, f"{self.spec.name}: resize")
        if latents not in LATENT_MODES:
            raise ValueError(f"{self.spec.name}: latents must be one of {', '.join(LATENT_MODES)}, got {latents!r}")
        self.latents = latents

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

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``[T,3,H,W]`` in [0,1] -> ``[T,3,h,w]`` in [-1,1], resized with the ``resize`` kernel."""
        x = resize_video(video.to(device=self.device, dtype=torch.float32), self.input_hw, self.resize)
        return (x * 2.0 - 1.0).clamp(-1.0, 1.0)

    def vae_encode(self, x: torch.Tensor, draw: int = POSTERIOR_DRAW["clip"]) -> torch.Tensor:
        """``x [B,3,F,H,W]`` in [-1,1] -> the posterior mode, or (``latents="sample"``) ``mean + std * noise``
        with noise seeded by (seed, ``draw``): 0 for the clip, 1 for the first frame alone."""
        self.vae_calls += 1
        with self.vae_on_device() as vae:
            out = vae.encode(x.to(device=self.device, dtype=self.vae_dtype))
        dist = out.latent_dist if hasattr(out, "latent_dist") else out[0]
        if self.latents == "mode":
            return dist.mode()
        eps = posterior_noise(tuple(dist.mean.shape), noise_seed(self.seed, 0, NUM_INFERENCE_STEPS + draw))
        return dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]  # [1,3,L,H,W]
        x0 = self.vae_encode(x, POSTERIOR_DRAW["clip"]).float() * self.scaling_factor  # [1,16,F,h,w]
        B, _, Fr, h, w = x0.shape
        first = self.vae_encode(x[:, :, :1], POSTERIOR_DRAW["first_frame"]).float() * self.scaling_factor
        lat = torch.zeros_like(x0)
        lat[:, :, :1] = first
        mask = torch.zeros(B, 1, Fr, h, w, device=x0.device)
        mask[:, :, 0] = 1.0
        cond = {
            "cond": pack(torch.cat([mask, lat], dim=1)),
            "img_ids": image_ids(Fr, h // PATCH, w // PATCH).to(x0.device),
        }
        return ClipLatents(latents=x0, grid=(Fr, h // PATCH, w // PATCH), cond=cond)

    def noised(self, cl: ClipLatents, choice, clip_k: int) -> torch.Tensor:
        """``x_t`` from the clean latents and seeded noise, with the scheduler's mix in its ``dtype``."""
        noise = make_noise(cl.latents.shape, noise_seed(self.seed, clip_k, choice.index))
        t = torch.tensor(choice.model_t, dtype=torch.float64)
        return self.scheduler.scale_noise(cl.latents.float(), t, noise.to(cl.latents.device)).to(self.dtype)

    def denoiser_forward(self, noisy, choice, cl):
        dev, dt = self.device, self.dtype
        txt = self.text_embeds.to(dev, dt)
        t = torch.tensor([choice.model_t / self.scheduler.config.num_train_timesteps], dtype=torch.float64)
        out = self.transformer(
            img=pack(noisy).to(dev, dt), img_ids=cl.cond["img_ids"].to(dev), txt=txt,
            txt_ids=torch.zeros(1, txt.shape[1], 3, device=dev), timesteps=t.to(dev, self.scheduler.dtype),
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
            "schedule_dtype": self.scheduler.dtype_name,
            "formula": "t = a*tau/(1+(a-1)*tau); x_t = (1-t)*x0 + (1-(1-sigma_min)*(1-t))*noise",
            "latent_grid": self.latent_grid(video.shape[0]),
        }
        fs.info["preprocess"] = {
            "resize": self.resize, "latents": self.latents, "vae_dtype": str(self.vae_dtype).replace("torch.", ""),
            "vae_spatial_tiling": bool(getattr(self.vae, "use_tiling", False)),
            "vae_framewise": bool(getattr(self.vae, "use_framewise_encoding", False)),
        }
        fs.info["layer_numbering"] = (
            f"1..{self.transformer.config.depth} double_blocks, then single_blocks: "
            f"layer = {self.transformer.config.depth} + single index (0-based) + 1"
        )
        return fs


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


@dataclass(frozen=True)
class OpenSoraOptions:
    """Open-Sora 2.0's own build options (see :func:`make`)."""

    pooled_embeds: str | None = None  # a precomputed CLIP-pooled empty-prompt embedding (safetensors)
    tiny_layers: int = 3  # single-stream blocks of a tiny model
    tiny_double: int = 2  # double-stream blocks of a tiny model
    vae_model_id: str | None = None  # where hunyuan_vae.safetensors (or a diffusers vae folder) lives
    vae_dtype: str | None = None  # None: fp32
    latents: str = "mode"  # the clip's VAE latents: posterior mode or a seeded sample
    schedule_dtype: str = "fp32"  # dtype of the time shift, the noise mix and the timestep fed
    vae_spatial_tiling: bool = True
    vae_framewise: bool = False  # 16-frame temporal VAE tiles
    mmdit_config: dict | None = None  # MMDiTConfig fields (default: the 11B model)
    vae_config: dict | None = None  # AutoencoderKLHunyuanVideo arguments (default: the class defaults)


def make(ctx: BuildContext, own: OpenSoraOptions) -> OpenSoraBackbone:
    """Open-Sora 2.0: the official checkpoint (``model_id`` = hub id, local folder or ``.safetensors``) or ``tiny``.

    ``text_embeds`` / ``pooled_embeds``: precomputed T5 / CLIP-pooled
    empty-prompt embeddings (safetensors); otherwise computed once and cached.
    ``vae_model_id``: where ``hunyuan_vae.safetensors`` (or a diffusers
    ``vae`` folder) lives, default ``model_id``. Numerics (the release's values
    in brackets): ``dtype`` of the MMDiT [bf16]; ``vae_dtype`` (default fp32)
    [bf16]; ``resize`` kernel [pil-bicubic]; ``latents`` ``mode`` or ``sample``
    [sample]; ``schedule_dtype`` of the time shift, the noise mix and the
    timestep fed [bf16]; ``vae_spatial_tiling`` [on] and ``vae_framewise``
    (16-frame temporal tiles) [off]. ``mmdit_config`` / ``vae_config``: other
    architectures than the 11B model / the default VAE (dicts of their fields).
    """
    d = require_diffusers()
    vdt = torch.float32 if own.vae_dtype is None else resolve_dtype(own.vae_dtype, ctx.device)
    schedule_dtype_of(own.schedule_dtype, ctx.name)
    tiled = lambda vae: configure_vae_tiling(_cast(vae, vdt), own.vae_spatial_tiling, own.vae_framewise)  # noqa: E731

    def tiny() -> DiffusionParts:
        transformer = randomize_(OpenSoraMMDiT(tiny_config(own.tiny_double, own.tiny_layers)), ctx.seed)
        return DiffusionParts(_cast(transformer, ctx.dtype), tiled(d.AutoencoderKLHunyuanVideo(**TINY_VAE)),
                              OpenSoraFlowScheduler(dtype=own.schedule_dtype), torch.randn(1, *TINY_TEXT),
                              {"pooled_embeds": torch.randn(1, TINY_POOLED)})

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        config = MMDiTConfig(**own.mmdit_config) if own.mmdit_config else None
        vae = load_vae(own.vae_model_id or mid, rev if own.vae_model_id is None else None, config=own.vae_config)
        return DiffusionParts(
            load_transformer(mid, rev, dt, config=config), tiled(vae), OpenSoraFlowScheduler(dtype=own.schedule_dtype),
            prompt_embedding(ctx, compute_empty_t5, mid, rev, dt, ctx.options.text_embeds, key=f"{mid}#t5"),
            {"pooled_embeds": prompt_embedding(ctx, compute_empty_clip, mid, rev, dt, own.pooled_embeds,
                                               key=f"{mid}#clip")},
        )

    return make_diffusion(ctx, OpenSoraBackbone, tiny, pretrained, vae_dtype=vdt, latents=own.latents)


FAMILY = Family("opensora", make, options=DIFFUSION_OPTIONS, own=OpenSoraOptions)
build = FAMILY.build  # build(spec, **options)


DEPTH_DOUBLE = MMDiTConfig().depth
DEPTH_SINGLE = MMDiTConfig().depth_single_blocks
DEFAULT_LAYER = DEPTH_DOUBLE + REFERENCE_SINGLE_BLOCK + 1  # 40
DEFAULT_INDEX = 750  # tau = 1 - 750/1000 = 0.25 exactly (before the time shift)


def register_backbones() -> None:
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
    FAMILY.register(spec)
