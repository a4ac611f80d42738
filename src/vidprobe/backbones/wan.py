"""WAN2.1 (text-to-video 1.3B / 14B, image-to-video 14B 480P) through diffusers.

Components: ``WanTransformer3DModel`` (patch (1,2,2)), ``AutoencoderKLWan``
(4x time, 8x space, 16 latent channels), UMT5 text encoder (only for the
cached empty-prompt embedding), ``UniPCMultistepScheduler`` with flow sigmas
and ``flow_shift = 3.0`` (the reference's 480p setting; see
:mod:`vidprobe.backbones.diffusion` for the exact noise level of an index).

* Latents: ``vae.encode(x).latent_dist.mode()`` (= the mean the release
  reads), then ``(z - latents_mean) * (1 / latents_std)`` with the VAE config's
  per-channel statistics, as the release's ``OneStepWanPipeline`` computes it.
* Layout: one clip of all frames (81 in the reference, padded to 4k+1 by
  repeating the last frame); frame ``t`` -> latent ``floor((t-1)/4)+1``,
  frame 0 -> latent 0. 832x480 -> 21 x 30 x 52 tokens.
* Image-to-video: the first frame is the condition, as in
  ``WanImageToVideoPipeline``: ``vae.encode([frame0, zeros...])`` normalised,
  concatenated after a 4-channel mask (latent frame 0 = 1, others 0) to the
  noised latents (16 + 4 + 16 = 36 input channels), and the CLIP image
  encoder's penultimate hidden states as ``encoder_hidden_states_image``.
  This second VAE call (and the CLIP call) happen once per clip too.

Settings (build kwargs; defaults keep vidprobe's clean behaviour, the paper
configs set the release's: ``dtype: fp32, resize: pil-lanczos, flow_schedule: legacy``):

* ``resize``: frame resize kernel. The release feeds PIL frames to the
  diffusers ``VideoProcessor`` (Lanczos, no crop) = ``pil-lanczos``.
* ``dtype``: the release runs transformer and VAE in float32 (no autocast);
  the VAE always runs in float32 here.
* ``flow_schedule``: the UniPC flow-sigma schedule for ``set_timesteps(1000)``.
  ``installed``: whatever the installed diffusers computes; ``legacy``: the
  formula of diffusers <= 0.36, ``s_i = (1 - 1/N)(1 - i/N)`` (index 749 ->
  timestep 500, sigma 0.50100); ``current``: diffusers >= 0.37 (2026-03),
  ``s_i = 1 - i (1 - 1/N) / N`` with the first sigma lowered by 1e-6 (index
  749 -> timestep 502, sigma 0.50233). The release pins no diffusers version;
  the paper's features predate 0.37, so its configs use ``legacy``. Both are
  computed here (not taken from the installed diffusers) and checked against
  both diffusers releases by ``tests/test_parity_diffusion.py``.

``tiny=True`` builds the same diffusers classes at a tiny random config; the
text encoder is then replaced by a seeded random embedding ``[1, 8, 32]``
(and, for I2V, the CLIP encoder by a seeded random ``[1, 4, 8]`` image
embedding), since only the shapes matter for tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import pad_clip, require_diffusers, seeded, vae4x_index
from vidprobe.backbones.diffusion import (
    ClipLatents,
    DiffusionBackbone,
    _cast,
    vae4x_length,
)
from vidprobe.backbones.diffusion_build import (
    DiffusionParts,
    dtype_tag,
    hub_part,
    make_diffusion,
    pipeline_empty_prompt,
    prompt_embedding,
)
from vidprobe.backbones.loading import freeze

REFERENCE_HW = (480, 832)
REFERENCE_FRAMES = 81
FLOW_SHIFT = 3.0
DEFAULT_LAYER = 21  # the reference's 0-based block 20
DEFAULT_INDEX = 749
FLOW_SCHEDULES = ("installed", "legacy", "current")

VARIANTS: dict[str, dict[str, Any]] = {
    "wan2.1-t2v-1.3b": dict(model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", layers=30, dim=1536, i2v=False),
    "wan2.1-t2v-14b": dict(model_id="Wan-AI/Wan2.1-T2V-14B-Diffusers", layers=40, dim=5120, i2v=False),
    "wan2.1-i2v-14b-480p": dict(model_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", layers=40, dim=5120, i2v=True),
}

TINY_TEXT = (8, 32)  # (tokens, dim) of the random text embedding in tiny mode
TINY_IMAGE = (4, 8)  # (tokens, dim) of the random image embedding in tiny mode (I2V)


def tiny_transformer_config(i2v: bool = False, num_layers: int = 3) -> dict[str, Any]:
    cfg = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36 if i2v else 16,
        out_channels=16, text_dim=TINY_TEXT[1], freq_dim=32, ffn_dim=32, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    if i2v:
        cfg.update(image_dim=TINY_IMAGE[1], added_kv_proj_dim=16)
    return cfg


TINY_VAE = dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])


def flow_schedule(num_steps: int, num_train: int, shift: float, schedule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """UniPC's flow-sigma schedule: (sigmas ``[num_steps + 1]`` float32 ending in 0, timesteps ``[num_steps]`` int64).

    ``legacy`` (diffusers <= 0.36): unshifted ``s = flip(1 - linspace(1, 1/num_train, num_steps + 1))[:-1]``;
    ``current`` (diffusers >= 0.37): ``s = linspace(1, 1/num_train, num_steps + 1)[:-1]`` and a first sigma
    of exactly 1 lowered by 1e-6. Both shift ``sigma = shift s / (1 + (shift - 1) s)``; timesteps are
    ``int64(sigma * num_train)`` (truncated), the final sigma is 0 (``final_sigmas_type="zero"``).
    """
    if schedule == "legacy":
        s = 1.0 - np.linspace(1.0, 1.0 / num_train, num_steps + 1)
        sig = np.flip(shift * s / (1.0 + (shift - 1.0) * s))[:-1].copy()
    elif schedule == "current":
        s = np.linspace(1.0, 1.0 / num_train, num_steps + 1)[:-1]
        sig = shift * s / (1.0 + (shift - 1.0) * s)
        if abs(sig[0] - 1.0) < 1e-6:
            sig[0] -= 1e-6
    else:
        raise ValueError(f"flow_schedule must be one of {FLOW_SCHEDULES[1:]} here, got {schedule!r}")
    timesteps = torch.from_numpy(sig * num_train).to(torch.int64)
    sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))
    return sigmas, timesteps


def apply_flow_schedule(scheduler: Any, schedule: str) -> Any:
    """Replace a prepared UniPC scheduler's sigmas/timesteps by ``schedule``'s (``installed``: leave them)."""
    if schedule not in FLOW_SCHEDULES:
        raise ValueError(f"flow_schedule must be one of {FLOW_SCHEDULES}, got {schedule!r}")
    if schedule == "installed":
        return scheduler
    cfg = scheduler.config
    if not getattr(cfg, "use_flow_sigmas", False) or getattr(cfg, "use_dynamic_shifting", False):
        raise ValueError(f"flow_schedule={schedule!r} needs a UniPC scheduler with static flow sigmas")
    if getattr(cfg, "final_sigmas_type", "zero") != "zero" or getattr(cfg, "shift_terminal", None):
        raise ValueError(f"flow_schedule={schedule!r}: only final_sigmas_type='zero' without shift_terminal")
    n = len(scheduler.timesteps)
    scheduler.sigmas, scheduler.timesteps = flow_schedule(n, int(cfg.num_train_timesteps), float(cfg.flow_shift), schedule)
    return scheduler


class WanBackbone(DiffusionBackbone):
    def __init__(self, *args, i2v: bool = False, image_encoder=None, image_processor=None,
                 flow_schedule: str = "installed", **kw):
        super().__init__(*args, **kw)
        self.flow_schedule = flow_schedule
        apply_flow_schedule(self.scheduler, flow_schedule)
        self.i2v = i2v
        self.image_encoder = image_encoder
        self.image_processor = image_processor
        cfg = self.vae.config
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)

    @property
    def blocks(self):
        return self.transformer.blocks

    def clips(self, T: int) -> list[list[int]]:
        return [pad_clip(list(range(T)), vae4x_length(T))]

    def frame_index(self, T: int) -> torch.Tensor:
        return vae4x_index(T)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean) * (1 / std)`` in float32 (the reciprocal first, as the release computes it)."""
        return (z.float() - self._mean.to(z.device)) * (1.0 / self._std.to(z.device))

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]  # [1,3,F,H,W]
        x0 = self.normalize_latents(self.vae_encode(x))
        _, _, F, h, w = x0.shape
        p = self.transformer.config.patch_size
        cond: dict[str, Any] = {}
        if self.i2v:
            first = torch.cat([x[:, :, :1], torch.zeros_like(x[:, :, 1:])], dim=2)
            lat_cond = self.normalize_latents(self.vae_encode(first))
            mask = torch.zeros(1, 4, F, h, w, device=lat_cond.device)
            mask[:, :, 0] = 1.0
            cond["condition"] = torch.cat([mask, lat_cond], dim=1)
            cond["image_embeds"] = self.image_embeds(frames[0])
        return ClipLatents(latents=x0, grid=(F // p[0], h // p[1], w // p[2]), cond=cond)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() * self._std.to(latents.device) + self._mean.to(latents.device)
        with self.vae_on_device() as vae:
            x = vae.decode(z.to(self.device, self.vae_dtype), return_dict=False)[0]
        return ((x[0].permute(1, 0, 2, 3).float() + 1) / 2).clamp(0, 1).cpu()

    def image_embeds(self, frame: torch.Tensor) -> torch.Tensor:
        """CLIP penultimate hidden states of the first frame (what ``WanImageToVideoPipeline.encode_image`` returns)."""
        if self.image_encoder is None:  # tiny mode: seeded random embedding of the right shape
            with seeded(self.seed + 17):
                return torch.randn(1, *TINY_IMAGE)
        img = ((frame.float().clamp(-1, 1) + 1) / 2).cpu()
        inputs = self.image_processor(images=img, return_tensors="pt", do_rescale=False)
        enc = self.image_encoder
        inputs = {k: v.to(device=self.device, dtype=enc.dtype) for k, v in inputs.items()}
        with self._module_on_device(enc):
            out = enc(**inputs, output_hidden_states=True)
        return out.hidden_states[-2].float().cpu()

    def _module_on_device(self, module):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            if self.offload and self.device.type != "cpu":
                module.to(self.device)
                try:
                    yield
                finally:
                    module.to("cpu")
            else:
                yield

        return ctx()

    def denoiser_forward(self, noisy, choice, cl):
        x = noisy
        kw = {}
        if self.i2v:
            x = torch.cat([noisy, cl.cond["condition"].to(noisy.dtype)], dim=1)
            kw["encoder_hidden_states_image"] = cl.cond["image_embeds"].to(self.device, self.dtype)
        t = torch.tensor([int(round(choice.model_t))], dtype=torch.long, device=self.device)  # UniPC's int64 timestep
        return self.transformer(
            hidden_states=x, timestep=t, encoder_hidden_states=self.text_embeds.to(self.device, self.dtype),
            return_dict=False, **kw,
        )


def make_scheduler(model_id: str | None = None, revision: str | None = None, tiny: bool = False):
    d = require_diffusers()
    if tiny or model_id is None:
        return d.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT, num_train_timesteps=1000
        )
    return d.UniPCMultistepScheduler.from_pretrained(model_id, subfolder="scheduler", revision=revision, flow_shift=FLOW_SHIFT)


def compute_empty_prompt(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt through ``WanPipeline.encode_prompt`` (UMT5, 512 tokens, padding zeroed)."""
    return pipeline_empty_prompt("WanPipeline", "UMT5EncoderModel", model_id, revision, device, dtype)


@dataclass(frozen=True)
class WanOptions:
    """WAN's own build options (``resize`` and the other common ones are in ``BuildOptions``)."""

    tiny_layers: int = 3  # transformer blocks of a tiny model
    flow_schedule: str = "installed"  # UniPC flow-sigma schedule: installed, legacy (diffusers <= 0.36), current


def make(ctx: BuildContext, own: WanOptions) -> WanBackbone:
    """A WAN2.1 backbone: hub weights (``model_id`` = hub id or local diffusers folder) or ``tiny`` random.

    ``resize`` and ``flow_schedule``: see the module docstring (the paper configs: ``pil-lanczos``, ``legacy``).
    """
    d = require_diffusers()
    i2v = VARIANTS[ctx.variant]["i2v"]

    def tiny() -> DiffusionParts:
        transformer = _cast(d.WanTransformer3DModel(**tiny_transformer_config(i2v, own.tiny_layers)), ctx.dtype)
        return DiffusionParts(transformer, d.AutoencoderKLWan(**TINY_VAE), make_scheduler(tiny=True),
                              torch.randn(1, *TINY_TEXT))

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        parts = DiffusionParts(
            hub_part(d.WanTransformer3DModel, mid, "transformer", rev, dt),
            hub_part(d.AutoencoderKLWan, mid, "vae", rev, torch.float32), make_scheduler(mid, rev),
            prompt_embedding(ctx, compute_empty_prompt, mid, rev, dt, ctx.options.text_embeds,
                             variant=f"umt5-{dtype_tag(dt)}"),
        )
        if i2v:
            from transformers import CLIPImageProcessor, CLIPVisionModel

            enc = CLIPVisionModel.from_pretrained(mid, subfolder="image_encoder", revision=rev, dtype=dt)
            parts.extra = {
                "image_encoder": freeze(enc.to("cpu" if ctx.options.offload else ctx.device)),
                "image_processor": CLIPImageProcessor.from_pretrained(mid, subfolder="image_processor", revision=rev),
            }
        return parts

    return make_diffusion(ctx, WanBackbone, tiny, pretrained, vae_dtype=torch.float32, i2v=i2v,
                          flow_schedule=own.flow_schedule)


FAMILY = Family("wan", make, options=DIFFUSION_OPTIONS, own=WanOptions)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, arch in VARIANTS.items():
        spec = BackboneSpec(
            name=variant,
            family="wan",
            model_id=arch["model_id"],
            num_layers=arch["layers"],
            default_layer=DEFAULT_LAYER,
            input_hw=REFERENCE_HW,
            num_frames=REFERENCE_FRAMES,
            frame_layout="vae4x",
            default_timestep=DEFAULT_INDEX,
            extras="hf",
            description=(
                f"WAN2.1 {'I2V' if arch['i2v'] else 'T2V'} C={arch['dim']}, UniPC flow shift {FLOW_SHIFT}, empty prompt; "
                "reference: block 20 (0-based = layer 21), index 749, 81 frames 832x480 -> 21x30x52"
            ),
        )
        FAMILY.register(spec, variant)
