"""WAN2.2 (TI2V-5B; T2V-A14B, the two-expert model) through diffusers, on the WAN2.1 adapter (:mod:`.wan`).

Both use ``WanTransformer3DModel`` (patch (1,2,2)), UMT5 for the cached empty-prompt embedding (``WanPipeline.
encode_prompt``, 512 tokens, as WAN2.1) and the hub's ``UniPCMultistepScheduler`` with flow sigmas (``flow_shift``
5.0 for TI2V-5B, 3.0 for T2V-A14B: the values diffusers' ``scripts/convert_wan_to_diffusers.py`` wrote into those
repos); ``set_timesteps(1000)`` and the ``flow_schedule`` setting as in :mod:`.wan`. Latents as WAN2.1:
``(vae.encode(x).latent_dist.mode() - latents_mean) * (1 / latents_std)`` with the VAE's per-channel statistics.

* **wan2.2-ti2v-5b** (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``): 30 blocks, C = 3072, 48 latent channels; the Wan2.2
  VAE (``AutoencoderKLWan(z_dim=48, patch_size=2, is_residual=True)``): a 2x2 pixel patchify then 3 downsamples =
  **16x space**, **4x time**. Input size: a multiple of 32 (VAE 16 x patch 2); default 704x1280 (the model's 720p),
  81 frames -> 21 x 22 x 40 tokens. Layout ``vae4x``: frame ``t`` -> latent ``floor((t-1)/4)+1``, frame 0 -> 0.
  ``WanPipeline(expand_timesteps=True)``: the timestep goes in per token (``[1, F*h*w]``, all ``t``).
  ``first_frame=True`` conditions on the first frame as ``WanImageToVideoPipeline`` with ``expand_timesteps``:
  latent frame 0 of the input is the normalised latent of frame 0 encoded alone (the posterior mode, the pipeline's
  ``argmax``), its tokens get timestep 0, every other token ``t`` (no CLIP image encoder in this model).
* **wan2.2-t2v-a14b** (``Wan-AI/Wan2.2-T2V-A14B-Diffusers``): two 14B experts of WAN2.1-14B's architecture (40
  blocks, C = 5120), the WAN2.1 VAE (8x space, 4x time, 16 channels); 832x480, 81 frames -> 21 x 30 x 52 tokens.
  The expert follows ``WanPipeline.__call__``: ``boundary = boundary_ratio * num_train_timesteps`` (0.875 * 1000 =
  875; the ratio is read from the repo's ``model_index.json``), ``transformer`` (high-noise expert) serves every
  scheduler timestep ``t >= boundary``, ``transformer_2`` (low-noise expert) every ``t < boundary``, ``t`` being the
  value fed to the denoiser (UniPC's int64 timestep). With flow shift 3.0 and diffusers >= 0.37's schedule index 300
  (t = 875) is the last high-noise index and 301 (t = 874) the first low-noise one; the default index 749 (t = 502)
  is served by the low-noise expert. ``FeatureSet.info["experts"]`` records, per timestep, the expert that served it.

Layers: 1-based block outputs of the denoiser (for A14B: of the expert that served the timestep). The default,
layer 21 (0-based block 20) at index 749, is WAN2.1's reference reading (no published reading exists for WAN2.2;
the same block and index keep the two generations comparable). ``tiny=True``: the same classes at tiny random
configs (A14B: two differently seeded experts) and a seeded random text embedding ``[1, 8, 32]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import require_diffusers
from vidprobe.backbones.diffusion import ClipLatents, _cast
from vidprobe.backbones.diffusion_build import DiffusionParts, dtype_tag, hub_part, make_diffusion, prompt_embedding
from vidprobe.backbones.wan import TINY_TEXT, TINY_VAE, WanBackbone, compute_empty_prompt, tiny_transformer_config

DEFAULT_LAYER = 21  # WAN2.1's reference reading: 0-based block 20
DEFAULT_INDEX = 749
HIGH, LOW = "transformer", "transformer_2"  # the pipeline's names of the high- and low-noise experts

VARIANTS: dict[str, dict[str, Any]] = {
    "wan2.2-ti2v-5b": dict(model_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", layers=30, dim=3072, hw=(704, 1280),
                           experts=1, boundary_ratio=None, expand_timesteps=True, flow_shift=5.0),
    "wan2.2-t2v-a14b": dict(model_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers", layers=40, dim=5120, hw=(480, 832),
                            experts=2, boundary_ratio=0.875, expand_timesteps=False, flow_shift=3.0),
}
REFERENCE_FRAMES = 81
TINY_HW = (64, 96)  # a multiple of 32 (TI2V-5B: VAE 16 x patch 2)

#: a tiny Wan2.2 VAE: the 2x2 patchify (12 channels), residual blocks and 3 downsamples of the real one (16x / 4x)
TINY_VAE22 = dict(base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                  is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4,
                  scale_factor_spatial=16)


class Wan22Backbone(WanBackbone):
    """WAN2.2: per-token timesteps (TI2V-5B), first-frame condition (TI2V-5B), two experts by timestep (A14B)."""

    def __init__(self, spec: BackboneSpec, transformer: torch.nn.Module, vae: torch.nn.Module, *args,
                 transformer_2: torch.nn.Module | None = None, boundary_ratio: float | None = None,
                 expand_timesteps: bool = False, first_frame: bool = False, **kw):
        self.size_multiple = int(vae.config.scale_factor_spatial) * int(transformer.config.patch_size[1])
        super().__init__(spec, transformer, vae, *args, **kw)
        if (transformer_2 is None) != (boundary_ratio is None):
            raise ValueError(f"{spec.name}: a second expert needs a boundary_ratio and vice versa")
        if first_frame and not expand_timesteps:
            raise ValueError(f"{spec.name}: first_frame conditioning is TI2V-5B's (per-token timesteps)")
        self.transformer_2 = transformer_2
        if transformer_2 is not None:
            transformer_2.to(device=self.device).eval().requires_grad_(False)
        self.boundary_ratio = boundary_ratio
        self.expand_timesteps = bool(expand_timesteps)
        self.first_frame = bool(first_frame)

    @property
    def boundary_timestep(self) -> float | None:
        """``boundary_ratio * num_train_timesteps`` (WanPipeline's switch point), None for one expert."""
        if self.boundary_ratio is None:
            return None
        return self.boundary_ratio * self.scheduler.config.num_train_timesteps

    def expert_name(self, choice) -> str:
        """``transformer`` when ``t >= boundary`` (or one expert), else ``transformer_2``: WanPipeline's rule."""
        b = self.boundary_timestep
        return HIGH if b is None or choice.model_t >= b else LOW

    def expert(self, choice) -> torch.nn.Module:
        return self.transformer if self.expert_name(choice) == HIGH else self.transformer_2

    def blocks_for(self, choice):
        return self.expert(choice).blocks

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        cl = super().encode_clip(frames)
        if self.first_frame:  # WanImageToVideoPipeline(expand_timesteps): frame 0 alone, posterior mode, normalised
            cl.cond["first"] = self.normalize_latents(self.vae_encode(frames[:1].permute(1, 0, 2, 3)[None]))
        return cl

    def timestep_input(self, choice, cl: ClipLatents) -> torch.Tensor:
        """What the pipeline feeds as ``timestep``: ``[1]`` int64, or per token ``[1, F*h*w]`` float32 (0 on the
        first latent frame's tokens when conditioned on it)."""
        t = int(round(choice.model_t))
        if not self.expand_timesteps:
            return torch.tensor([t], dtype=torch.long, device=self.device)
        F, h, w = cl.grid
        mask = torch.ones(F, h, w, device=self.device)
        if self.first_frame:
            mask[0] = 0.0
        return (mask * t).flatten()[None]

    def denoiser_forward(self, noisy, choice, cl):
        x = noisy
        if self.first_frame:  # (1 - mask) * condition + mask * latents, mask 0 on latent frame 0
            x = noisy.clone()
            x[:, :, :1] = cl.cond["first"].to(noisy.device, noisy.dtype)
        return self.expert(choice)(
            hidden_states=x, timestep=self.timestep_input(choice, cl),
            encoder_hidden_states=self.text_embeds.to(self.device, self.dtype), return_dict=False,
        )

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(DEFAULT_INDEX,), clip=None):
        fs = super().extract(video, layers, timesteps, clip)
        fs.info["experts"] = [
            {"index": c.index, "model_t": c.model_t, "expert": self.expert_name(c)} for c in self.timestep_choices(timesteps)
        ]
        fs.info["boundary_timestep"] = self.boundary_timestep
        fs.info["expand_timesteps"] = self.expand_timesteps
        fs.info["first_frame"] = self.first_frame
        return fs


def make_scheduler(variant: str, model_id: str | None = None, revision: str | None = None):
    """The hub's UniPC flow scheduler (its own ``flow_shift``), or for tiny models the published values."""
    d = require_diffusers()
    if model_id is None:
        return d.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                         flow_shift=VARIANTS[variant]["flow_shift"], num_train_timesteps=1000)
    return d.UniPCMultistepScheduler.from_pretrained(model_id, subfolder="scheduler", revision=revision)


def pipeline_boundary_ratio(model_id: str, revision: str | None, default: float | None) -> float | None:
    """``boundary_ratio`` of the repo's ``model_index.json`` (WanPipeline's config), else ``default``."""
    d = require_diffusers()
    cfg = d.DiffusionPipeline.load_config(model_id, revision=revision)
    return cfg.get("boundary_ratio", default)


@dataclass(frozen=True)
class Wan22Options:
    """WAN2.2's own build options (see the module docstring)."""

    tiny_layers: int = 2  # transformer blocks of a tiny model (each expert)
    flow_schedule: str = "installed"  # UniPC flow-sigma schedule: installed, legacy (diffusers <= 0.36), current
    first_frame: bool = False  # TI2V-5B: condition on the first frame (image-to-video)


def make(ctx: BuildContext, own: Wan22Options) -> Wan22Backbone:
    """A WAN2.2 backbone: hub weights (``model_id`` = hub id or local diffusers folder) or ``tiny`` random."""
    d = require_diffusers()
    arch = VARIANTS[ctx.variant]
    two = arch["experts"] == 2
    if own.first_frame and not arch["expand_timesteps"]:
        raise ValueError(f"{ctx.name}: first_frame needs TI2V-5B's image condition; this model has none")

    def tiny() -> DiffusionParts:
        c = TINY_VAE22["z_dim"] if not two else TINY_VAE["z_dim"]
        cfg = tiny_transformer_config(False, own.tiny_layers) | dict(in_channels=c, out_channels=c)
        experts = [_cast(d.WanTransformer3DModel(**cfg), ctx.dtype) for _ in range(arch["experts"])]
        vae = d.AutoencoderKLWan(**(TINY_VAE if two else _tiny_vae22()))
        extra = {"transformer_2": experts[1], "boundary_ratio": arch["boundary_ratio"]} if two else {}
        return DiffusionParts(experts[0], vae, make_scheduler(ctx.variant), torch.randn(1, *TINY_TEXT), extra)

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        parts = DiffusionParts(
            hub_part(d.WanTransformer3DModel, mid, "transformer", rev, dt),
            hub_part(d.AutoencoderKLWan, mid, "vae", rev, torch.float32), make_scheduler(ctx.variant, mid, rev),
            prompt_embedding(ctx, compute_empty_prompt, mid, rev, dt, ctx.options.text_embeds,
                             variant=f"umt5-{dtype_tag(dt)}"),
        )
        if two:
            parts.extra = {"transformer_2": hub_part(d.WanTransformer3DModel, mid, "transformer_2", rev, dt),
                           "boundary_ratio": pipeline_boundary_ratio(mid, rev, arch["boundary_ratio"])}
        return parts

    return make_diffusion(ctx, Wan22Backbone, tiny, pretrained, tiny_hw=TINY_HW, vae_dtype=torch.float32,
                          flow_schedule=own.flow_schedule, expand_timesteps=arch["expand_timesteps"],
                          first_frame=own.first_frame)


def _tiny_vae22() -> dict[str, Any]:
    """The tiny Wan2.2 VAE with the real model's 48 per-channel latent statistics."""
    from vidprobe.backbones.fullsize import WAN22_VAE

    return TINY_VAE22 | {k: WAN22_VAE[k] for k in ("latents_mean", "latents_std")}


FAMILY = Family("wan22", make, options=DIFFUSION_OPTIONS, own=Wan22Options)
build = FAMILY.build  # build(spec, variant, **options)


def register_backbones() -> None:
    for variant, arch in VARIANTS.items():
        h, w = arch["hw"]
        vae_x = 16 if variant == "wan2.2-ti2v-5b" else 8
        moe = (f"two experts (high noise: t >= {arch['boundary_ratio']} x 1000, low noise below), "
               if arch["experts"] == 2 else "per-token timesteps, optional first-frame condition, ")
        spec = BackboneSpec(
            name=variant,
            family="wan22",
            model_id=arch["model_id"],
            num_layers=arch["layers"],
            default_layer=DEFAULT_LAYER,
            input_hw=arch["hw"],
            num_frames=REFERENCE_FRAMES,
            frame_layout="vae4x",
            default_timestep=DEFAULT_INDEX,
            extras="hf",
            description=(
                f"WAN2.2 {variant.split('-', 1)[1].upper()} C={arch['dim']}, VAE {vae_x}x space 4x time, {moe}"
                f"UniPC flow shift {arch['flow_shift']}, empty prompt; default layer 21 (0-based block 20, WAN2.1's "
                f"reading), index 749; 81 frames {w}x{h} -> 21x{h // vae_x // 2}x{w // vae_x // 2}"
            ),
        )
        FAMILY.register(spec, variant)
