"""LTX-Video (2B, text/image-to-video) through diffusers.

Components (``Lightricks/LTX-Video``, the 0.9.0 diffusers release): ``LTXVideoTransformer3DModel`` (28 blocks, C =
2048, patch 1x1x1, 128 input channels), ``AutoencoderKLLTXVideo`` (a 4x4 pixel patchify then 3 space-time downsamples:
**32x space, 8x time**, 128 channels), T5-XXL (only for the cached empty-prompt embedding),
``FlowMatchEulerDiscreteScheduler`` with resolution-dependent shifting.

* Latents: ``(vae.encode(x).latent_dist.mode() - latents_mean) * scaling_factor / latents_std`` with the VAE's
  per-channel buffers (``LTXPipeline._normalize_latents``). The transformer takes them **packed into tokens**
  (``LTXPipeline._pack_latents``: ``[B, C, F, H, W]`` -> ``[B, F*H*W, C]``, F-major, then rows, then columns); the hooked
  hidden states ``[1, F*h*w, C]`` are unpacked back to ``[F, h, w, C]`` in that order (``tests/test_new_families.py``
  checks it with a constructed input).
* Layout ``vae8x``: one clip of all frames padded to 8k+1 (repeating the last); frame 0 -> latent 0, frame ``t`` ->
  ``floor((t-1)/8)+1``. Input size: a multiple of 32; default 544x960, 81 frames -> 11 x 17 x 30 tokens.
* Schedule as ``LTXPipeline.__call__``: ``set_timesteps(sigmas=linspace(1, 1/N, N), mu=calculate_shift(F*h*w,
  base_image_seq_len, max_image_seq_len, base_shift, max_shift))`` (the scheduler config's values; N = 1000) over the
  latent grid actually fed, then ``shift_terminal`` stretching; the denoiser gets ``timestep = t`` and RoPE with
  ``rope_interpolation_scale = (8 / frame_rate, 32, 32)`` (``frame_rate`` option, the pipeline's default 25).
  ``info["time_shift"]`` records ``mu``.
* Text: the empty prompt through ``LTXPipeline.encode_prompt`` (T5, 128 tokens) *trimmed to the tokens its attention
  mask keeps*, fed with an all-ones mask (the transformer masks the others with a -10000 bias, i.e. weight
  exp(-10000) = 0 in float32).
* ``first_frame=True`` conditions on the first frame as ``LTXImageToVideoPipeline``: latent frame 0 is the normalised
  latent of frame 0 encoded alone (posterior mode, or a seeded sample with ``condition_latent="sample"``, which the
  pipeline draws), and its tokens get timestep ``t * (1 - mask) = 0``.

Layers: 1-based block outputs (``transformer_blocks[k-1]``). Default layer 20 (0-based block 19, about 70% of the
depth like the study's WAN2.1 (21/30) and Open-Sora 2.0 (40/57) readings; no published reading exists), index 750
(tau 0.25). ``tiny=True``: the same classes at a tiny config and a seeded random text embedding ``[1, 8, 32]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import pad_clip, require_diffusers
from vidprobe.backbones.diffusion import ClipLatents, DiffusionBackbone, _cast
from vidprobe.backbones.diffusion_build import DiffusionParts, dtype_tag, hub_part, make_diffusion, prompt_embedding

MODEL_ID = "Lightricks/LTX-Video"
REFERENCE_HW = (544, 960)
REFERENCE_FRAMES = 81
NUM_LAYERS = 28
DEFAULT_LAYER = 20
DEFAULT_INDEX = 750  # tau 0.25
FRAME_RATE = 25  # LTXPipeline.__call__'s default
TINY_HW = (64, 96)  # a multiple of 32

TINY_TEXT = (8, 32)
TINY_TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8,
                        cross_attention_dim=16, num_layers=2, caption_channels=TINY_TEXT[1])
#: a tiny LTX VAE: the real 4x4 patchify and 3 space-time downsamples (32x space, 8x time)
TINY_VAE = dict(latent_channels=16, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1))
#: LTX-Video's scheduler (convert_ltx_to_diffusers.py): dynamic shifting with these values, shift_terminal 0.1
SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                 max_image_seq_len=4096, shift_terminal=0.1)


def causal_length(n: int, ratio: int) -> int:
    """Smallest clip length >= n of the form ``ratio * k + 1`` (what a causal ``ratio``x video VAE needs)."""
    return 1 + ratio * max(0, -(-(n - 1) // ratio))


def causal_index(T: int, ratio: int) -> torch.Tensor:
    """Causal ``ratio``x temporal VAE: frame 0 -> latent 0, frame ``t`` -> ``floor((t-1)/ratio)+1``."""
    t = torch.arange(T, dtype=torch.long)
    return torch.where(t == 0, torch.zeros_like(t), torch.div(t - 1, ratio, rounding_mode="floor") + 1)


def pipeline_sigmas(num_steps: int) -> np.ndarray:
    """``LTXPipeline``'s sigmas before the shift: ``linspace(1, 1/N, N)``."""
    return np.linspace(1.0, 1.0 / num_steps, num_steps)


class LTXVideoBackbone(DiffusionBackbone):
    def __init__(self, spec: BackboneSpec, transformer: torch.nn.Module, vae: torch.nn.Module, *args,
                 frame_rate: float = FRAME_RATE, first_frame: bool = False, **kw):
        self.size_multiple = int(vae.spatial_compression_ratio) * int(transformer.config.patch_size)
        self.frames_for_shift = spec.num_frames or 1  # the latent grid of the time shift, set per video in encode()
        super().__init__(spec, transformer, vae, *args, **kw)
        self.frame_rate = float(frame_rate)
        self.first_frame = bool(first_frame)
        cfg = self.vae.config
        self.scaling_factor = float(cfg.scaling_factor)

    @property
    def blocks(self):
        return self.transformer.transformer_blocks

    @property
    def temporal_ratio(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    def latent_grid(self, T: int) -> tuple[int, int, int]:
        """(latent frames, rows, columns) of a ``T``-frame video at the input size (``LTXPipeline``'s formulas)."""
        s = int(self.vae.spatial_compression_ratio)
        H, W = self.input_hw
        return (causal_length(T, self.temporal_ratio) - 1) // self.temporal_ratio + 1, H // s, W // s

    def mu(self) -> float:
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        F, h, w = self.latent_grid(self.frames_for_shift)
        c = self.scheduler.config
        return float(calculate_shift(F * h * w, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                     c.get("base_shift", 0.5), c.get("max_shift", 1.15)))

    def set_schedule(self, scheduler, num_steps: int):
        mu = self.mu() if scheduler.config.get("use_dynamic_shifting", False) else None
        scheduler.set_timesteps(sigmas=pipeline_sigmas(num_steps), mu=mu, device="cpu")
        return scheduler

    def set_frames(self, T: int) -> None:
        """The time shift follows the latent grid of the video fed: re-set the schedule for ``T`` frames."""
        if T != self.frames_for_shift:
            self.frames_for_shift = T
            self.set_schedule(self.scheduler, len(self.scheduler.timesteps))

    def clips(self, T: int) -> list[list[int]]:
        return [pad_clip(list(range(T)), causal_length(T, self.temporal_ratio))]

    def frame_index(self, T: int) -> torch.Tensor:
        return causal_index(T, self.temporal_ratio)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """``LTXPipeline._normalize_latents`` with the VAE's buffers, in float32."""
        d = require_diffusers()
        return d.LTXPipeline._normalize_latents(z.float(), self.vae.latents_mean.float(), self.vae.latents_std.float(),
                                                self.scaling_factor)

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]
        x0 = self.normalize(self.vae_encode(x))  # [1,C,F,h,w]
        _, _, F, h, w = x0.shape
        cfg = self.transformer.config
        cond = {}
        if self.first_frame:  # LTXImageToVideoPipeline.prepare_latents: frame 0 alone, normalised
            cond["first"] = self.normalize(self.condition_latent_of(self.vae_latent_dist(x[:, :, :1])))
        return ClipLatents(latents=x0, grid=(F // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size), cond=cond)

    def encode(self, video: torch.Tensor) -> list[ClipLatents]:
        self.set_frames(video.shape[0])
        return super().encode(video)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        d, cfg = require_diffusers(), self.transformer.config
        return d.LTXPipeline._pack_latents(latents, cfg.patch_size, cfg.patch_size_t)

    def denoiser_forward(self, noisy, choice, cl):
        dev, dt = self.device, self.dtype
        d, cfg = require_diffusers(), self.transformer.config
        F, h, w = cl.grid
        x, t = noisy, torch.tensor([choice.model_t], dtype=torch.float32, device=dev)
        if self.first_frame:  # init * mask + x_t * (1 - mask); timestep t * (1 - mask) per token
            x = noisy.clone()
            x[:, :, :1] = cl.cond["first"].to(noisy.device, noisy.dtype)
            mask = torch.zeros(1, 1, *noisy.shape[2:], device=dev)
            mask[:, :, 0] = 1.0
            t = t[:, None] * (1 - self.pack(mask)[..., 0])
        txt = self.text_embeds.to(dev, dt)
        s = float(self.vae.spatial_compression_ratio)
        out = self.transformer(
            hidden_states=self.pack(x.to(dev, dt)), encoder_hidden_states=txt, timestep=t,
            encoder_attention_mask=torch.ones(1, txt.shape[1], device=dev), num_frames=F, height=h, width=w,
            rope_interpolation_scale=(self.temporal_ratio / self.frame_rate, s, s), return_dict=False,
        )[0]
        return (d.LTXPipeline._unpack_latents(out, F, h, w, cfg.patch_size, cfg.patch_size_t),)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        d = require_diffusers()
        z = d.LTXPipeline._denormalize_latents(latents.float(), self.vae.latents_mean.float(),
                                               self.vae.latents_std.float(), self.scaling_factor)
        with self.vae_on_device() as vae:
            x = vae.decode(z.to(self.device, self.vae_dtype), return_dict=False)[0]
        return ((x[0].permute(1, 0, 2, 3).float() + 1) / 2).clamp(0, 1).cpu()

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(DEFAULT_INDEX,), clip=None):
        self.set_frames(video.shape[0])  # before the timesteps are resolved
        fs = super().extract(video, layers, timesteps, clip)
        fs.info["time_shift"] = {"mu": self.mu(), "latent_grid": self.latent_grid(video.shape[0])}
        fs.info["first_frame"] = self.first_frame
        fs.info["frame_rate"] = self.frame_rate
        return fs


def compute_empty_prompt(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt through ``LTXPipeline.encode_prompt`` (T5, 128 tokens), trimmed to its attention mask."""
    import transformers

    d = require_diffusers()
    tok = transformers.AutoTokenizer.from_pretrained(model_id, subfolder="tokenizer", revision=revision)
    enc = transformers.T5EncoderModel.from_pretrained(model_id, subfolder="text_encoder", revision=revision,
                                                      dtype=dtype).to(device)
    pipe = d.LTXPipeline(tokenizer=tok, text_encoder=enc, vae=None, transformer=None, scheduler=None)
    with torch.inference_mode():
        emb, mask, _, _ = pipe.encode_prompt("", do_classifier_free_guidance=False, device=device)
    out = emb[:, mask[0].bool()].float().cpu()
    del pipe, enc
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def make_scheduler(model_id: str | None = None, revision: str | None = None):
    d = require_diffusers()
    if model_id is None:
        return d.FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    return d.FlowMatchEulerDiscreteScheduler.from_pretrained(model_id, subfolder="scheduler", revision=revision)


@dataclass(frozen=True)
class LTXVideoOptions:
    """LTX-Video's own build options (see the module docstring)."""

    frame_rate: float = FRAME_RATE  # fps of the video: RoPE's temporal interpolation scale 8 / frame_rate
    first_frame: bool = False  # condition on the first frame (image-to-video)
    condition_latent: str = "mode"  # the first frame's latent: posterior mode or a seeded sample (the pipeline's)
    tiny_layers: int = 2  # transformer blocks of a tiny model


def make(ctx: BuildContext, own: LTXVideoOptions) -> LTXVideoBackbone:
    """LTX-Video: hub weights (``model_id`` = hub id or local diffusers folder) or ``tiny`` random."""
    d = require_diffusers()

    def tiny() -> DiffusionParts:
        transformer = _cast(d.LTXVideoTransformer3DModel(**(TINY_TRANSFORMER | {"num_layers": own.tiny_layers})),
                            ctx.dtype)
        return DiffusionParts(transformer, d.AutoencoderKLLTXVideo(**TINY_VAE), make_scheduler(),
                              torch.randn(1, *TINY_TEXT))

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        return DiffusionParts(
            hub_part(d.LTXVideoTransformer3DModel, mid, "transformer", rev, dt),
            hub_part(d.AutoencoderKLLTXVideo, mid, "vae", rev, torch.float32), make_scheduler(mid, rev),
            prompt_embedding(ctx, compute_empty_prompt, mid, rev, dt, ctx.options.text_embeds,
                             variant=f"t5-{dtype_tag(dt)}"),
        )

    return make_diffusion(ctx, LTXVideoBackbone, tiny, pretrained, tiny_hw=TINY_HW, vae_dtype=torch.float32,
                          frame_rate=own.frame_rate, first_frame=own.first_frame,
                          condition_latent=own.condition_latent)


FAMILY = Family("ltxvideo", make, options=DIFFUSION_OPTIONS, own=LTXVideoOptions)
build = FAMILY.build  # build(spec, **options)


def register_backbones() -> None:
    h, w = REFERENCE_HW
    FAMILY.register(BackboneSpec(
        name="ltx-video",
        family="ltxvideo",
        model_id=MODEL_ID,
        num_layers=NUM_LAYERS,
        default_layer=DEFAULT_LAYER,
        input_hw=REFERENCE_HW,
        num_frames=REFERENCE_FRAMES,
        frame_layout="vae8x",
        default_timestep=DEFAULT_INDEX,
        extras="hf",
        description=(
            "LTX-Video 2B (28 blocks, C=2048), VAE 32x space 8x time, tokens packed 1x1x1, flow matching with "
            f"resolution-dependent shift, empty prompt (T5); default layer 20 (0-based block 19), index 750 "
            f"(tau 0.25); 81 frames {w}x{h} -> 11x{h // 32}x{w // 32}"
        ),
    ))
