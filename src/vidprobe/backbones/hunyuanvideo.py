"""HunyuanVideo (text-to-video, 13B, guidance-distilled) through diffusers.

Components (``hunyuanvideo-community/HunyuanVideo``): ``HunyuanVideoTransformer3DModel`` (20 dual-stream then 40
single-stream blocks, C = 3072, patch 1x2x2, a token refiner on the text), ``AutoencoderKLHunyuanVideo`` (4x time, 8x
space, 16 channels, ``scaling_factor`` 0.476986), ``FlowMatchEulerDiscreteScheduler(shift=7.0)``.

* Latents: ``vae.encode(x).latent_dist.mode() * scaling_factor`` (the image-to-video pipeline's scaling of encoded
  frames; ``HunyuanVideoPipeline`` decodes ``latents / scaling_factor``).
* Layout ``vae4x``: one clip of all frames padded to 4k+1 (repeating the last); frame ``t`` -> latent
  ``floor((t-1)/4)+1``, frame 0 -> 0. Default input 544x960 (the model's 540p), 81 frames -> 21 x 34 x 60 tokens.
  Image tokens come out of every block first (``x_embedder``: conv, then F-major, rows, columns).
* Schedule as ``HunyuanVideoPipeline.__call__``: ``set_timesteps(sigmas=linspace(1, 0, N + 1)[:-1])`` (N = 1000;
  shifted by the scheduler's ``shift``), the denoiser gets ``timestep = t`` (float) and ``x_t = (1 - sigma) x_0 +
  sigma noise`` (the scheduler's ``scale_noise``).
* Text, both through the pipeline's own encoders and cached on disk: the Llama embedding (``_get_llama_prompt_embeds``:
  the prompt template, hidden state of layer -3, template tokens cropped, 256 tokens) *trimmed to the tokens its
  attention mask keeps* (the transformer masks the others as keys everywhere and RoPE covers only image tokens, so the
  image tokens see the same attention; ``tests/test_new_families.py`` checks the two agree on the real class), fed with
  an all-ones mask; and the CLIP-L ``pooler_output`` (``_get_clip_prompt_embeds``, 77 tokens) as
  ``pooled_projections``.
* Guidance embedding (the distilled model's ``guidance_embeds``): ``guidance = guidance_scale * 1000`` with the
  pipeline's default ``guidance_scale`` 6.0 (option ``guidance_scale``).

Layers, like Open-Sora 2.0's (:mod:`.opensora`): 1-based block outputs counted **dual-stream blocks first, then
single-stream blocks**: layers 1..20 are ``transformer_blocks[0..19]``, layers 21..60 ``single_transformer_blocks
[0..39]`` (the image tokens of each block's output). The default, layer 41 = single-stream block 20 (0-based), is the
block the study reads in Open-Sora 2.0, whose MMDiT has this layout; with index 750 (tau 0.25). No published reading
exists for HunyuanVideo. ``tiny=True``: the same classes at a tiny config, random text ``[1, 8, 32]`` and pooled
``[1, 16]`` embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidprobe.backbones.base import BackboneSpec
from vidprobe.backbones.builder import DIFFUSION_OPTIONS, BuildContext, Family
from vidprobe.backbones.common import pad_clip, require_diffusers, vae4x_index
from vidprobe.backbones.diffusion import ClipLatents, DiffusionBackbone, _cast, vae4x_length
from vidprobe.backbones.diffusion_build import DiffusionParts, dtype_tag, hub_part, make_diffusion, prompt_embedding

MODEL_ID = "hunyuanvideo-community/HunyuanVideo"
REFERENCE_HW = (544, 960)
REFERENCE_FRAMES = 81
NUM_DUAL, NUM_SINGLE = 20, 40
DEFAULT_LAYER = NUM_DUAL + 20 + 1  # single-stream block 20 (0-based) = 41
DEFAULT_INDEX = 750  # tau 0.25
GUIDANCE_SCALE = 6.0  # HunyuanVideoPipeline.__call__'s default
FLOW_SHIFT = 7.0  # the hub scheduler's shift (convert_hunyuan_video_to_diffusers.py --flow_shift default)

TINY_TEXT = (8, 32)
TINY_POOLED = 16
TINY_TRANSFORMER = dict(
    in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
    num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=TINY_TEXT[1],
    pooled_projection_dim=TINY_POOLED, rope_axes_dim=(2, 2, 4), guidance_embeds=True,
)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                layers_per_block=1, norm_num_groups=4, mid_block_add_attention=False)


def pipeline_sigmas(num_steps: int) -> np.ndarray:
    """``HunyuanVideoPipeline``'s sigmas before the scheduler's shift: ``linspace(1, 0, N + 1)[:-1]``."""
    return np.linspace(1.0, 0.0, num_steps + 1)[:-1]


class HunyuanVideoBackbone(DiffusionBackbone):
    size_multiple = 16  # VAE 8 x patch 2

    def __init__(self, *args, pooled_embeds: torch.Tensor, guidance_scale: float = GUIDANCE_SCALE, **kw):
        super().__init__(*args, **kw)
        if pooled_embeds.dim() == 3:  # a cached [1, D] comes back as [1, 1, D]
            pooled_embeds = pooled_embeds[:, 0]
        self.pooled_embeds = pooled_embeds.detach().cpu()
        self.guidance_scale = float(guidance_scale)
        self.scaling_factor = float(self.vae.config.scaling_factor)

    @property
    def blocks(self):
        """Dual-stream then single-stream blocks: the layer numbering of the module docstring."""
        return list(self.transformer.transformer_blocks) + list(self.transformer.single_transformer_blocks)

    def set_schedule(self, scheduler, num_steps: int):
        scheduler.set_timesteps(sigmas=pipeline_sigmas(num_steps), device="cpu")
        return scheduler

    def clips(self, T: int) -> list[list[int]]:
        return [pad_clip(list(range(T)), vae4x_length(T))]

    def frame_index(self, T: int) -> torch.Tensor:
        return vae4x_index(T)

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        x0 = self.vae_encode(frames.permute(1, 0, 2, 3)[None]).float() * self.scaling_factor  # [1,16,F,h,w]
        _, _, F, h, w = x0.shape
        cfg = self.transformer.config
        return ClipLatents(latents=x0, grid=(F // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size), cond={})

    def denoiser_forward(self, noisy, choice, cl):
        dev, dt = self.device, self.dtype
        txt = self.text_embeds.to(dev, dt)
        guidance = torch.tensor([self.guidance_scale], dtype=dt, device=dev) * 1000.0
        return self.transformer(
            hidden_states=noisy.to(dev, dt), timestep=torch.tensor([choice.model_t], dtype=torch.float32, device=dev),
            encoder_hidden_states=txt, encoder_attention_mask=torch.ones(1, txt.shape[1], device=dev),
            pooled_projections=self.pooled_embeds.to(dev, dt), guidance=guidance, return_dict=False,
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() / self.scaling_factor
        with self.vae_on_device() as vae:
            x = vae.decode(z.to(self.device, self.vae_dtype), return_dict=False)[0]
        return ((x[0].permute(1, 0, 2, 3).float() + 1) / 2).clamp(0, 1).cpu()

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(DEFAULT_INDEX,), clip=None):
        fs = super().extract(video, layers, timesteps, clip)
        n = len(self.transformer.transformer_blocks)
        fs.info["layer_numbering"] = f"1..{n} dual-stream blocks, then single-stream: layer = {n} + single index + 1"
        fs.info["guidance"] = self.guidance_scale * 1000.0
        return fs


def _pipeline(model_id: str, revision: str | None, device, dtype, which: str):
    """A ``HunyuanVideoPipeline`` holding only the tokenizer and text encoder ``which`` (llama or clip)."""
    import transformers

    d = require_diffusers()
    sub, cls = ("", "LlamaModel") if which == "llama" else ("_2", "CLIPTextModel")
    tok = transformers.AutoTokenizer.from_pretrained(model_id, subfolder=f"tokenizer{sub}", revision=revision)
    enc = getattr(transformers, cls).from_pretrained(model_id, subfolder=f"text_encoder{sub}", revision=revision,
                                                     dtype=dtype).to(device)
    parts = {"tokenizer": None, "text_encoder": None, "tokenizer_2": None, "text_encoder_2": None}
    parts.update({f"tokenizer{sub}": tok, f"text_encoder{sub}": enc})
    return d.HunyuanVideoPipeline(transformer=None, vae=None, scheduler=None, **parts)


def compute_empty_llama(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt through ``_get_llama_prompt_embeds`` (the default template), trimmed to its mask."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    pipe = _pipeline(model_id, revision, device, dtype, "llama")
    with torch.inference_mode():
        emb, mask = pipe._get_llama_prompt_embeds("", DEFAULT_PROMPT_TEMPLATE, device=device, dtype=dtype)
    return _release(pipe, emb[:, mask[0].bool()])


def compute_empty_clip(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt's CLIP-L ``pooler_output`` through ``_get_clip_prompt_embeds`` ``[1, 768]``."""
    pipe = _pipeline(model_id, revision, device, dtype, "clip")
    with torch.inference_mode():
        pooled = pipe._get_clip_prompt_embeds("", device=device, dtype=dtype)
    return _release(pipe, pooled)


def _release(pipe, t: torch.Tensor) -> torch.Tensor:
    out = t.float().cpu()
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def make_scheduler(model_id: str | None = None, revision: str | None = None):
    d = require_diffusers()
    if model_id is None:
        return d.FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT)
    return d.FlowMatchEulerDiscreteScheduler.from_pretrained(model_id, subfolder="scheduler", revision=revision)


@dataclass(frozen=True)
class HunyuanVideoOptions:
    """HunyuanVideo's own build options (see the module docstring)."""

    guidance_scale: float = GUIDANCE_SCALE  # the embedded (distilled) guidance, fed as guidance_scale * 1000
    pooled_embeds: str | None = None  # a precomputed CLIP-pooled empty-prompt embedding (safetensors)
    tiny_layers: int = 2  # single-stream blocks of a tiny model
    tiny_dual: int = 2  # dual-stream blocks of a tiny model


def make(ctx: BuildContext, own: HunyuanVideoOptions) -> HunyuanVideoBackbone:
    """HunyuanVideo: hub weights (``model_id`` = hub id or local diffusers folder) or ``tiny`` random."""
    d = require_diffusers()

    def tiny() -> DiffusionParts:
        cfg = TINY_TRANSFORMER | dict(num_layers=own.tiny_dual, num_single_layers=own.tiny_layers)
        transformer = _cast(d.HunyuanVideoTransformer3DModel(**cfg), ctx.dtype)
        return DiffusionParts(transformer, d.AutoencoderKLHunyuanVideo(**TINY_VAE), make_scheduler(),
                              torch.randn(1, *TINY_TEXT), {"pooled_embeds": torch.randn(1, TINY_POOLED)})

    def pretrained() -> DiffusionParts:
        mid, rev, dt = ctx.model_id, ctx.options.revision, ctx.dtype
        tag = dtype_tag(dt)
        return DiffusionParts(
            hub_part(d.HunyuanVideoTransformer3DModel, mid, "transformer", rev, dt),
            hub_part(d.AutoencoderKLHunyuanVideo, mid, "vae", rev, torch.float32), make_scheduler(mid, rev),
            prompt_embedding(ctx, compute_empty_llama, mid, rev, dt, ctx.options.text_embeds, key=f"{mid}#llama",
                             variant=f"llama-{tag}"),
            {"pooled_embeds": prompt_embedding(ctx, compute_empty_clip, mid, rev, dt, own.pooled_embeds,
                                               key=f"{mid}#clip", variant=f"clip-{tag}")},
        )

    return make_diffusion(ctx, HunyuanVideoBackbone, tiny, pretrained, vae_dtype=torch.float32,
                          guidance_scale=own.guidance_scale)


FAMILY = Family("hunyuanvideo", make, options=DIFFUSION_OPTIONS, own=HunyuanVideoOptions)
build = FAMILY.build  # build(spec, **options)


def register_backbones() -> None:
    h, w = REFERENCE_HW
    FAMILY.register(BackboneSpec(
        name="hunyuanvideo",
        family="hunyuanvideo",
        model_id=MODEL_ID,
        num_layers=NUM_DUAL + NUM_SINGLE,
        default_layer=DEFAULT_LAYER,
        input_hw=REFERENCE_HW,
        num_frames=REFERENCE_FRAMES,
        frame_layout="vae4x",
        default_timestep=DEFAULT_INDEX,
        extras="hf",
        description=(
            f"HunyuanVideo 13B T2V (20 dual-stream + 40 single-stream blocks, C=3072), flow shift {FLOW_SHIFT}, "
            f"empty prompt (Llama + CLIP-L pooled), embedded guidance {GUIDANCE_SCALE}; default layer 41 "
            f"(single-stream block 20, 0-based), index 750 (tau 0.25); 81 frames {w}x{h} -> 21x{h // 16}x{w // 16}"
        ),
    ))
