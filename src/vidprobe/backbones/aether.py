"""Aether (``AetherWorldModel/AetherV1``: CogVideoX-5B-I2V fine-tuned for 3D) through diffusers.

The transformer comes from the Aether repo; VAE, text encoder and scheduler
from ``THUDM/CogVideoX-5b-I2V`` (as in Aether's own pipeline). Aether denoises
three modalities at once and is conditioned on two:

    latents   x_0  [F, 56]:  rgb (16) | disparity (16) | raymap (24)
    condition c    [F, 40]:  first-frame rgb latent on latent frame 0, zeros elsewhere (16) | camera (24, zeros)
    transformer input [F, 96] = noised x_0 ++ c       (disparity = VAE latent channels, raymap = 6-d rays x 4 frames)

(the channel counts are read from the transformer's config: ``out_channels`` =
3 modalities, ``in_channels - out_channels`` = condition; a config that does not
split as rgb | disparity | raymap and image | camera raises).

Geometry latents (setting ``geometry``):

* ``reconstruct`` (the release, the paper configs): first run Aether's own
  reconstruction task on the clip, as ``AetherV1PipelineCogVideoX`` does for
  ``task="reconstruction"``: condition = [the clip's rgb latents (a posterior
  sample with ``condition_latent="sample"``) | zeros (24)], initial latents
  ``randn [F, 56]``, ``CogVideoXDPMScheduler`` (same config as the feature
  scheduler) with ``set_timesteps(4)`` (trailing: 999, 749, 499, 249),
  guidance 1 (no classifier-free guidance), empty prompt, the same RoPE
  (fps 8); each step ``scheduler.step(pred.float(), old_pred, t, t_prev, latents)``
  (DPM-Solver++ 2M with the scheduler's own stochastic term), latents cast
  back to the compute dtype. The result's channels 16..55 (disparity |
  raymap) are the geometry latents; the RGB channels are dropped.
* ``zeros`` (default): geometry latents left at zero (features then come from a
  clip Aether never sees in training; cheaper, and vidprobe's behaviour before
  the reconstruction pass existed).

Feature pass (the release's ``OneStepAetherPipeline.__call__``, task
``videogen``): ``x_0 = [rgb latent mean | geometry]`` (all 56 channels noised at
the timestep), condition ``[first-frame image latent (sample with
condition_latent="sample") on frame 0 | zeros | camera zeros]``, RoPE with
temporal positions scaled by base_fps / fps = 12 / 8, ofs when configured.
The reconstruction draws its random numbers from the seeded stream
``noise_seed(seed, clip, RECON_STREAM)`` (the release's are unseeded). The
clip layout (2 interleaved clips of 41 frames) is CogVideoX's.

The release runs Aether in bf16 under bf16 autocast with the VAE's slicing and
tiling on: the paper configs set ``dtype: bf16, autocast: true, vae_tiling: true,
resize: pil-lanczos, condition_latent: sample, geometry: reconstruct``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.cogvideox import (
    DEFAULT_INDEX,
    DEFAULT_LAYER,
    I2V_BASE,
    REFERENCE_HW,
    TINY_TEXT,
    TINY_VAE,
    CogVideoXBackbone,
    CogVideoXOptions,
    compute_empty_prompt,
    settings,
    tiny_parts,
)
from vidprobe.backbones.common import require_diffusers
from vidprobe.backbones.diffusion import (
    RECON_INPUT_STREAM,
    RECON_STREAM,
    ClipLatents,
    make_generator,
    noise_seed,
)
from vidprobe.backbones.diffusion_build import DiffusionParts, hub_part, make_diffusion, prompt_embedding

MODEL_ID = "AetherWorldModel/AetherV1"
NUM_LAYERS = 42
DIM = 3072
REFERENCE_FRAMES = 81  # 2 interleaved clips of 41
NUM_CLIPS = 2
FPS, BASE_FPS = 8, 12  # the release's fps and Aether's base fps: RoPE temporal factor 12 / 8
RAYMAP_CHANNELS = 24  # 6-d ray map x 4 frames per latent frame
RECON_STEPS = 4  # AetherV1PipelineCogVideoX's default for task="reconstruction" (guidance 1.0)
GEOMETRY = ("zeros", "reconstruct")

TINY_LATENT = 16  # tiny VAE latent channels: 16 + 16 + 24 = 56 outputs, 56 + 40 = 96 inputs as the real model
TINY_AETHER_VAE = dict(TINY_VAE, latent_channels=TINY_LATENT)


def tiny_transformer_config(num_layers: int = 3) -> dict[str, Any]:
    out = 2 * TINY_LATENT + RAYMAP_CHANNELS
    return dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=out + TINY_LATENT + RAYMAP_CHANNELS,
        out_channels=out, time_embed_dim=4, text_embed_dim=TINY_TEXT[1], num_layers=num_layers, sample_width=8,
        sample_height=8, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=TINY_TEXT[0], use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    )


def dpm_scheduler(config: Any) -> Any:
    """A ``CogVideoXDPMScheduler`` with the feature scheduler's config (the release's class for Aether)."""
    return require_diffusers().CogVideoXDPMScheduler.from_config(config)


class AetherBackbone(CogVideoXBackbone):
    def __init__(self, *args, geometry: str = "zeros", recon_steps: int = RECON_STEPS, **kw):
        super().__init__(*args, **kw)
        if geometry not in GEOMETRY:
            raise ValueError(f"{self.spec.name}: geometry must be one of {GEOMETRY}, got {geometry!r}")
        if int(recon_steps) < 1:
            raise ValueError(f"{self.spec.name}: recon_steps must be >= 1, got {recon_steps}")
        self.geometry, self.recon_steps = geometry, int(recon_steps)
        self.recon_calls = 0  # transformer calls of the reconstruction pass
        self.layout = self.channel_layout()

    def channel_layout(self) -> dict[str, int]:
        """Channel counts: rgb = disparity = VAE latent channels, raymap, image condition, camera condition."""
        c = self.latent_channels
        cin, cout = int(self.transformer.config.in_channels), int(self.transformer.config.out_channels)
        ray, cam = cout - 2 * c, cin - cout - c
        if ray <= 0 or cam != ray:
            raise ValueError(
                f"{self.spec.name}: transformer in/out channels {cin}/{cout} do not split as "
                f"[rgb {c} | disparity {c} | raymap R] ++ [image {c} | camera R] (VAE latent channels {c})"
            )
        return {"rgb": c, "disparity": c, "raymap": ray, "image": c, "camera": cam}

    def assemble(self, rgb: torch.Tensor, geometry: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rgb [B,F,C,h,w]``, ``geometry [B,F,C+R,h,w]``, ``image [B,1,C,h,w]`` -> (x_0 ``[B,F,2C+R]``, condition ``[B,F,C+R]``)."""
        B, F, C, h, w = rgb.shape
        x0 = torch.cat([rgb.float(), geometry.to(rgb.device).float()], dim=2)
        cond = rgb.new_zeros(B, F, self.layout["image"] + self.layout["camera"], h, w, dtype=torch.float32)
        cond[:, :1, :C] = image.float()
        return x0, cond

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]  # [1,3,L,H,W]
        dist = self.vae_latent_dist(x)  # one encode: its mean is x_0's rgb, its sample the reconstruction's input
        rgb = self.scale(dist.mode())  # [1,F,C,h,w]
        B, F, C, h, w = rgb.shape
        if self.geometry == "reconstruct":
            geometry = self.reconstruct(self.scale(self.condition_latent_of(dist, RECON_INPUT_STREAM)))
        else:
            geometry = rgb.new_zeros(B, F, self.layout["disparity"] + self.layout["raymap"], h, w)
        x0, cond = self.assemble(rgb, geometry, self.image_condition(x))
        p = int(self.transformer.config.patch_size)
        extra = {"condition": cond, "rope": self.rope(h, w, F), "geometry": geometry}
        return ClipLatents(latents=x0, grid=(F, h // p, w // p), cond=extra)

    @torch.inference_mode()
    def reconstruct(self, video_latents: torch.Tensor) -> torch.Tensor:
        """Aether's reconstruction task on a clip's scaled rgb latents ``[1,F,C,h,w]`` -> geometry latents ``[1,F,C+R,h,w]``."""
        from diffusers.utils.torch_utils import randn_tensor

        dt, dev = self.dtype, self.device
        sched = dpm_scheduler(self.scheduler.config)
        sched.set_timesteps(self.recon_steps, device="cpu")
        g = make_generator(noise_seed(self.seed, self.current_clip, RECON_STREAM))
        B, F, C, h, w = video_latents.shape
        camera = torch.zeros(B, F, self.layout["camera"], h, w, device=dev, dtype=dt)
        cond = torch.cat([video_latents.to(dev, dt), camera], dim=2)
        n_out = int(self.transformer.config.out_channels)
        lat = randn_tensor((B, F, n_out, h, w), generator=g, device=dev, dtype=dt) * sched.init_noise_sigma
        rope = self.rope(h, w, F)
        ts, old = sched.timesteps, None
        for i, t in enumerate(ts):
            inp = torch.cat([sched.scale_model_input(lat, t), cond], dim=2)
            with self.amp():
                pred = self.denoiser_call(inp, int(t), rope)[0].float()
            self.recon_calls += 1
            lat, old = sched.step(pred, old, t, ts[i - 1] if i > 0 else None, lat, eta=0.0, generator=g, return_dict=False)
            lat = lat.to(dt)
        return lat[:, :, C:]


@dataclass(frozen=True)
class AetherOptions(CogVideoXOptions):
    """Aether's own build options: CogVideoX's and these (see the module docstring)."""

    base_model_id: str | None = None  # where VAE, T5 and scheduler come from (default THUDM/CogVideoX-5b-I2V)
    geometry: str = "zeros"  # the geometry latents: zeros, or Aether's own reconstruction pass
    recon_steps: int = RECON_STEPS  # denoising steps of the reconstruction pass


def make(ctx: BuildContext, own: AetherOptions) -> AetherBackbone:
    """Aether: hub weights (``model_id``; VAE/T5/scheduler from ``base_model_id``) or ``tiny`` random.

    Settings: see the module docstring (and :mod:`vidprobe.backbones.cogvideox`).
    """
    d = require_diffusers()

    def pretrained() -> DiffusionParts:
        base = own.base_model_id or I2V_BASE
        return DiffusionParts(
            hub_part(d.CogVideoXTransformer3DModel, ctx.model_id, "transformer", ctx.options.revision, ctx.dtype),
            hub_part(d.AutoencoderKLCogVideoX, base, "vae", None, ctx.dtype),
            d.CogVideoXDDIMScheduler.from_pretrained(base, subfolder="scheduler"),
            # the release's Aether pipeline encodes the empty prompt with T5 in float32, then casts it to bf16
            prompt_embedding(ctx, compute_empty_prompt, base, None, torch.float32, ctx.options.text_embeds,
                             variant="t5-float32"),
        )

    tiny = lambda: tiny_parts(ctx, tiny_transformer_config(own.tiny_layers), TINY_AETHER_VAE)  # noqa: E731
    return make_diffusion(ctx, AetherBackbone, tiny, pretrained, **settings(own, NUM_CLIPS), fps_factor=BASE_FPS / FPS,
                          geometry=own.geometry, recon_steps=own.recon_steps)


FAMILY = Family("aether", make, options=DIFFUSION_OPTIONS, own=AetherOptions)
build = FAMILY.build  # build(spec, **options)


def register_backbones() -> None:
    clip_len = (REFERENCE_FRAMES - 1) // NUM_CLIPS + 1
    spec = BackboneSpec(
        name="aether",
        family="cogvideox",
        model_id=MODEL_ID,
        num_layers=NUM_LAYERS,
        default_layer=DEFAULT_LAYER,
        input_hw=REFERENCE_HW,
        num_frames=REFERENCE_FRAMES,
        frame_layout=f"interleaved {NUM_CLIPS} clips of {clip_len} from frame 0, vae4x",
        default_timestep=DEFAULT_INDEX,
        extras="hf",
        description=(
            f"Aether (CogVideoX-5B fine-tuned for 3D) C={DIM}, latents rgb|disparity|raymap (56) ++ condition (40), "
            f"optional reconstruction pass for the geometry latents; reference: block 20 (0-based = layer 21), "
            f"index 749, {REFERENCE_FRAMES} frames as {NUM_CLIPS}x{clip_len}, 720x480 -> {(clip_len - 1) // 4 + 1}x30x45 per clip"
        ),
    )
    FAMILY.register(spec)
