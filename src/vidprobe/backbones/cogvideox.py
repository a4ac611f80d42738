"""CogVideoX (2B, 5B, 5B-I2V) through diffusers (Aether, its 3D fine-tune: :mod:`vidprobe.backbones.aether`).

Components: ``CogVideoXTransformer3DModel`` (patch 2, tokens ``[F, h/2, w/2]``),
``AutoencoderKLCogVideoX`` (4x time, 8x space, 16 channels), T5 (only for the
cached empty-prompt embedding, 226 tokens, through the pipeline's
``encode_prompt``), ``CogVideoXDDIMScheduler`` (the model's own config;
``set_timesteps(1000)`` with ``trailing`` spacing: index ``i`` -> model
timestep ``999 - i``, noise by ``add_noise`` with the scheduler's
``alphas_cumprod``; index 749 -> t = 250).

* Latents: ``vae.encode(x).latent_dist.mode()`` (the mean the release reads)
  permuted to ``[B, F, C, h, w]`` and multiplied by ``vae.config.scaling_factor``
  (divided when ``invert_scale_latents``), as ``CogVideoXImageToVideoPipeline``.
* Image-to-video (5B-I2V): the first frame alone is VAE-encoded, its latent
  (the posterior mean, or with ``condition_latent="sample"`` a seeded
  posterior sample as the pipeline's ``prepare_latents`` draws) scaled the same
  way, zero-padded over the remaining latent frames and concatenated on the
  channel axis after the noised latents; ``ofs = 2.0`` when the transformer has
  an ofs embedding; RoPE from the pipeline's own
  ``_prepare_rotary_positional_embeddings``.

Interleaved layout (the reference: 97 frames -> 2 clips of 49; Aether: 81
frames -> 2 clips of 41): with ``n`` clips, clip ``k`` holds frames
``[0, k+1, k+1+n, k+1+2n, ...]`` (:func:`vidprobe.backbones.common.interleaved_clips`),
padded to a 4k+1 length by repeating its last frame. Clip ``k``'s latent maps
are ``k*F ... k*F+F-1`` (F = latent frames per clip); input frame 0 -> map 0
(clip 0, latent 0); frame ``t >= 1`` -> clip ``(t-1) % n``, position
``p = (t-1)//n + 1``, map ``k*F + (0 if p == 0 else (p-1)//4 + 1)``. Maps that
serve no input frame (padding, or clip k>0's copy of frame 0) are dropped and
the rest renumbered. A video shorter than 97 frames is fed whole: CO3D's 81
frames give 2 clips of 41 (11 latent frames each; the release itself needs 97
frames and raises on 81). At any clip length other than 49 frames,
CogVideoX-5B-I2V's patch embedding replaces its learned positional embedding
by the sinusoidal one (diffusers' ``CogVideoXPatchEmbed``; checked by
``test_cogvideox_learned_position_embedding_only_at_49_frames``), for vidprobe
and the release alike.

Settings (build kwargs; defaults keep vidprobe's clean behaviour; the paper
configs set the release's: ``dtype: fp16, resize: pil-lanczos, autocast: true,
condition_latent: sample``): ``resize``, ``autocast`` and ``condition_latent``
are described in :mod:`vidprobe.backbones.diffusion`; ``vae_tiling`` turns on
the VAE's slicing and tiling (``enable_slicing()``, ``enable_tiling()``), which
the release uses for Aether only (at 480x720 the VAE then encodes overlapping
tiles: its ``tile_sample_min`` is 240x360).

``tiny=True`` builds the same diffusers classes at a tiny random config and
replaces the text encoder by a seeded random embedding ``[1, 8, 32]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import (
    interleaved_clips,
    interleaved_frame_index,
    pad_clip,
    require_diffusers,
    vae4x_index,
)
from vidprobe.backbones.diffusion import ClipLatents, DiffusionBackbone, _cast, vae4x_length
from vidprobe.backbones.diffusion_build import (
    DiffusionParts,
    dtype_tag,
    hub_part,
    make_diffusion,
    pipeline_empty_prompt,
    prompt_embedding,
)

REFERENCE_HW = (480, 720)
DEFAULT_LAYER = 21  # the reference's 0-based block 20
DEFAULT_INDEX = 749
I2V_BASE = "THUDM/CogVideoX-5b-I2V"

VARIANTS: dict[str, dict[str, Any]] = {
    "cogvideox-2b": dict(model_id="THUDM/CogVideoX-2b", layers=30, dim=1920, i2v=False, clips=2, frames=97),
    "cogvideox-5b": dict(model_id="THUDM/CogVideoX-5b", layers=42, dim=3072, i2v=False, clips=2, frames=97),
    "cogvideox-5b-i2v": dict(model_id=I2V_BASE, layers=42, dim=3072, i2v=True, clips=2, frames=97),
}

TINY_TEXT = (8, 32)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=2,
    down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(8, 8, 8, 8), temporal_compression_ratio=4,
)


def tiny_transformer_config(variant: str, num_layers: int = 3) -> dict[str, Any]:
    arch = VARIANTS[variant]
    c = TINY_VAE["latent_channels"]
    rotary = variant != "cogvideox-2b"
    return dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=2 * c if arch["i2v"] else c, out_channels=c,
        time_embed_dim=4, text_embed_dim=TINY_TEXT[1], num_layers=num_layers, sample_width=8, sample_height=8,
        sample_frames=9, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TINY_TEXT[0],
        use_rotary_positional_embeddings=rotary, use_learned_positional_embeddings=False,
    )


class CogVideoXBackbone(DiffusionBackbone):
    def __init__(self, *args, fps_factor: float = 1.0, vae_tiling: bool = False, **kw):
        super().__init__(*args, **kw)
        d = require_diffusers()
        # the pipeline object only lends its helpers (RoPE); it holds no text encoder
        self.pipe = d.CogVideoXPipeline(
            tokenizer=None, text_encoder=None, vae=self.vae, transformer=self.transformer, scheduler=self.scheduler
        )
        self.fps_factor = float(fps_factor)
        self.vae_tiling = bool(vae_tiling)
        if self.vae_tiling:
            self.vae.enable_slicing()
            self.vae.enable_tiling()

    @property
    def blocks(self):
        return self.transformer.transformer_blocks

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def _clip_len(self, T: int) -> int:
        return vae4x_length(max(len(c) for c in interleaved_clips(T, self.num_clips)))

    def clips(self, T: int) -> list[list[int]]:
        L = self._clip_len(T)
        return [pad_clip(c, L) for c in interleaved_clips(T, self.num_clips)]

    def frame_index(self, T: int) -> torch.Tensor:
        L = self._clip_len(T)
        return interleaved_frame_index(T, self.num_clips, vae4x_index, (L - 1) // 4 + 1)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """``[B,C,F,h,w]`` posterior latent -> ``[B,F,C,h,w]`` float32 scaled as the pipelines do."""
        z = z.float().permute(0, 2, 1, 3, 4)
        sf = float(self.vae.config.scaling_factor)
        return z / sf if getattr(self.vae.config, "invert_scale_latents", False) else z * sf

    def image_condition(self, x: torch.Tensor) -> torch.Tensor:
        """``x [1,3,L,H,W]`` -> the scaled latent of its first frame alone ``[1,1,C,h,w]`` (mean or seeded sample)."""
        return self.scale(self.condition_latent_of(self.vae_latent_dist(x[:, :, :1])))

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x = frames.permute(1, 0, 2, 3)[None]  # [1,3,L,H,W]
        x0 = self.scale(self.vae_encode(x))  # [1,F,C,h,w]
        B, F, C, h, w = x0.shape
        cond: dict[str, Any] = {}
        n_cond = int(self.transformer.config.in_channels) - C
        if n_cond > 0:  # image-to-video: [first-frame latent | zeros] on latent frame 0, zeros elsewhere
            c = x0.new_zeros(B, F, n_cond, h, w)
            c[:, :1, :C] = self.image_condition(x)
            cond["condition"] = c
        p = int(self.transformer.config.patch_size)
        cond["rope"] = self.rope(h, w, F) if self.transformer.config.use_rotary_positional_embeddings else None
        return ClipLatents(latents=x0, grid=(F, h // p, w // p), cond=cond)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents[:, :, : self.latent_channels].float().permute(0, 2, 1, 3, 4)  # rgb part, [1,C,F,h,w]
        sf = float(self.vae.config.scaling_factor)
        z = z * sf if getattr(self.vae.config, "invert_scale_latents", False) else z / sf
        with self.vae_on_device() as vae:
            x = vae.decode(z.to(self.device, self.vae_dtype), return_dict=False)[0]
        return ((x[0].permute(1, 0, 2, 3).float() + 1) / 2).clamp(0, 1).cpu()

    def rope(self, h: int, w: int, frames: int):
        """The pipeline's RoPE for an ``h x w`` latent grid; with ``fps_factor != 1`` (Aether: base_fps / fps = 12 / 8)
        the temporal positions ``linspace(0, F-1, F)`` are multiplied by it, as Aether's pipeline does."""
        vsf = self.pipe.vae_scale_factor_spatial
        cos, sin = self.pipe._prepare_rotary_positional_embeddings(h * vsf, w * vsf, frames, self.device)
        if self.fps_factor != 1.0:
            from diffusers.models.embeddings import get_1d_rotary_pos_embed

            dim_t = int(self.transformer.config.attention_head_dim) // 4
            grid_t = torch.linspace(0, frames * (frames - 1) / frames, frames, dtype=torch.float32) * self.fps_factor
            tc, ts = get_1d_rotary_pos_embed(dim_t, grid_t, use_real=True)
            n = cos.shape[0] // frames
            cos = cos.clone()
            sin = sin.clone()
            cos[:, :dim_t] = tc.to(cos).repeat_interleave(n, dim=0)
            sin[:, :dim_t] = ts.to(sin).repeat_interleave(n, dim=0)
        return cos, sin

    def denoiser_call(self, x: torch.Tensor, model_t: int, rope) -> Any:
        """One transformer call on the full input ``x [1,F,C_in,h,w]`` (noised latents ++ condition)."""
        ofs = None
        if getattr(self.transformer.config, "ofs_embed_dim", None) is not None:
            ofs = x.new_full((1,), 2.0)
        t = torch.tensor([int(model_t)], dtype=torch.long, device=self.device)
        return self.transformer(
            hidden_states=x, encoder_hidden_states=self.text_embeds.to(self.device, self.dtype), timestep=t,
            ofs=ofs, image_rotary_emb=rope, return_dict=False,
        )

    def denoiser_forward(self, noisy, choice, cl):
        x = noisy
        if "condition" in cl.cond:
            x = torch.cat([noisy, cl.cond["condition"].to(noisy.device, noisy.dtype)], dim=2)
        return self.denoiser_call(x, int(round(choice.model_t)), cl.cond["rope"])


def compute_empty_prompt(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt through ``CogVideoXPipeline.encode_prompt`` (T5 in ``dtype``, 226 tokens)."""
    return pipeline_empty_prompt("CogVideoXPipeline", "T5EncoderModel", model_id, revision, device, dtype)


def tiny_scheduler():
    d = require_diffusers()
    return d.CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=True,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, snr_shift_scale=3.0, timestep_spacing="trailing",
    )


@dataclass(frozen=True)
class CogVideoXOptions:
    """CogVideoX's own build options (Aether's extend them); see the module docstring."""

    num_clips: int | None = None  # interleaved clips (None: the variant's, 2)
    tiny_layers: int = 3  # transformer blocks of a tiny model
    autocast: bool = False  # VAE and transformer under torch.autocast(dtype); noising in that dtype
    condition_latent: str = "mode"  # a condition's VAE latent: the posterior mode, or a seeded sample
    vae_tiling: bool = False  # the VAE's slicing and tiling


def settings(own: CogVideoXOptions, default_clips: int) -> dict[str, Any]:
    """The adapter kwargs of the CogVideoX options."""
    return dict(num_clips=own.num_clips or default_clips, autocast=own.autocast,
                condition_latent=own.condition_latent, vae_tiling=own.vae_tiling)


def tiny_parts(ctx: BuildContext, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> DiffusionParts:
    """A tiny CogVideoX-class model (transformer, VAE, DDIM) and a random ``[1, 8, 32]`` text embedding."""
    d = require_diffusers()
    transformer = _cast(d.CogVideoXTransformer3DModel(**transformer_config), ctx.dtype)
    return DiffusionParts(transformer, _cast(d.AutoencoderKLCogVideoX(**vae_config), ctx.dtype), tiny_scheduler(),
                          torch.randn(1, *TINY_TEXT))


def make(ctx: BuildContext, own: CogVideoXOptions) -> CogVideoXBackbone:
    """CogVideoX: hub weights (``model_id``) or ``tiny`` random; settings: see the module docstring."""
    d = require_diffusers()

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        return DiffusionParts(
            hub_part(d.CogVideoXTransformer3DModel, mid, "transformer", rev, dt),
            hub_part(d.AutoencoderKLCogVideoX, mid, "vae", rev, dt),
            d.CogVideoXDDIMScheduler.from_pretrained(mid, subfolder="scheduler", revision=rev),
            prompt_embedding(ctx, compute_empty_prompt, mid, rev, dt, ctx.options.text_embeds,
                             variant=f"t5-{dtype_tag(dt)}"),
        )

    tiny = lambda: tiny_parts(ctx, tiny_transformer_config(ctx.variant, own.tiny_layers), TINY_VAE)  # noqa: E731
    return make_diffusion(ctx, CogVideoXBackbone, tiny, pretrained, **settings(own, VARIANTS[ctx.variant]["clips"]))


FAMILY = Family("cogvideox", make, options=DIFFUSION_OPTIONS, own=CogVideoXOptions)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, arch in VARIANTS.items():
        clip_len = (arch["frames"] - 1) // arch["clips"] + 1
        spec = BackboneSpec(
            name=variant,
            family="cogvideox",
            model_id=arch["model_id"],
            num_layers=arch["layers"],
            default_layer=DEFAULT_LAYER,
            input_hw=REFERENCE_HW,
            num_frames=arch["frames"],
            frame_layout=f"interleaved {arch['clips']} clips of {clip_len} from frame 0, vae4x",
            default_timestep=DEFAULT_INDEX,
            extras="hf",
            description=(
                f"{variant} C={arch['dim']}, DDIM, empty prompt; reference: block 20 (0-based = layer 21), index 749, "
                f"{arch['frames']} frames as {arch['clips']}x{clip_len}, 720x480 -> {(clip_len - 1) // 4 + 1}x30x45 per clip"
            ),
        )
        FAMILY.register(spec, variant)
