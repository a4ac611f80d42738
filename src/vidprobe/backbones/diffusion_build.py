"""The build the diffusion families share (WAN, CogVideoX, Aether, Open-Sora 2.0).

A family's ``make`` supplies two functions returning its :class:`DiffusionParts` -- ``tiny()`` (the same classes
at a tiny random config, a random text embedding; run under the build's seed) and ``pretrained()`` (hub / local
weights, the cached empty-prompt embedding) -- and :func:`make_diffusion` picks one and wraps the parts in the
family's :class:`~vidprobe.backbones.diffusion.DiffusionBackbone` subclass with the common settings (input size,
device, dtype, seed, offload, model id, revision, resize kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from vidprobe.backbones.text_cache import empty_prompt_embeds

TINY_HW = (32, 48)  # input size of a tiny diffusion backbone when no height/width is given


@dataclass
class DiffusionParts:
    """The networks of a diffusion backbone and what else its adapter needs (``extra``: family kwargs)."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler: Any
    text_embeds: torch.Tensor  # [1, L, D] empty-prompt embedding (CPU)
    extra: dict[str, Any] = field(default_factory=dict)


def make_diffusion(ctx: Any, cls: type, tiny: Callable[[], DiffusionParts], pretrained: Callable[[], DiffusionParts],
                   tiny_hw: tuple[int, int] = TINY_HW, **adapter_kw) -> Any:
    """``cls`` (a DiffusionBackbone) around ``tiny()`` (seeded with ``ctx.seed``) or ``pretrained()`` parts.

    ``ctx`` is the :class:`vidprobe.backbones.builder.BuildContext`; ``adapter_kw`` are the family's own settings;
    ``tiny_hw`` is a tiny model's input size when none is given (a multiple of the family's VAE x patch).
    """
    if ctx.tiny:
        with ctx.seeded():
            parts = tiny()
    else:
        parts = pretrained()
    return cls(
        ctx.spec, parts.transformer, parts.vae, parts.scheduler, parts.text_embeds, ctx.input_hw(tiny_hw), ctx.device,
        ctx.dtype, seed=ctx.seed, offload=ctx.options.offload, model_id=ctx.loaded_id, revision=ctx.options.revision,
        resize=ctx.options.resize, **parts.extra, **adapter_kw,
    )


def hub_part(cls: Any, repo: str, subfolder: str, revision: str | None, dtype: torch.dtype) -> torch.nn.Module:
    """One diffusers component of a pipeline repo (or local folder): ``cls.from_pretrained(repo, subfolder=...)``."""
    return cls.from_pretrained(repo, subfolder=subfolder, revision=revision, torch_dtype=dtype)


def dtype_tag(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``float16`` (keys the cached prompt embedding by the text encoder's dtype)."""
    return str(dtype).replace("torch.", "")


def prompt_embedding(ctx: Any, compute: Callable[..., torch.Tensor], repo: str, revision: str | None,
                     dtype: torch.dtype, path: str | None, variant: str | None = None,
                     key: str | None = None) -> torch.Tensor:
    """The empty prompt's embedding: from ``path``, the disk cache (keyed by ``key`` or ``repo``, ``revision``,
    ``variant``), or ``compute(repo, revision, ctx.device, dtype)`` on a miss (then cached in ``cache_dir``)."""
    return empty_prompt_embeds(key or repo, revision, lambda: compute(repo, revision, ctx.device, dtype),
                               ctx.options.cache_dir, path, variant=variant)


def pipeline_empty_prompt(pipeline: str, encoder: str, model_id: str, revision: str | None, device,
                          dtype: torch.dtype) -> torch.Tensor:
    """The empty prompt through the diffusers pipeline ``pipeline``'s own ``encode_prompt`` (no classifier-free
    guidance), with the repo's ``tokenizer`` and ``text_encoder`` (transformers class ``encoder``, in ``dtype``);
    float32 on the CPU. The encoder is freed right after."""
    import transformers

    from vidprobe.backbones.common import require_diffusers

    tok = transformers.AutoTokenizer.from_pretrained(model_id, subfolder="tokenizer", revision=revision)
    enc = getattr(transformers, encoder).from_pretrained(model_id, subfolder="text_encoder", revision=revision,
                                                         dtype=dtype).to(device)
    pipe = getattr(require_diffusers(), pipeline)(tokenizer=tok, text_encoder=enc, vae=None, transformer=None,
                                                  scheduler=None)
    with torch.inference_mode():
        emb = pipe.encode_prompt("", do_classifier_free_guidance=False, device=device)[0]
    out = emb.float().cpu()
    del pipe, enc
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


__all__ = ["DiffusionParts", "make_diffusion", "hub_part", "dtype_tag", "prompt_embedding", "pipeline_empty_prompt",
           "TINY_HW"]
