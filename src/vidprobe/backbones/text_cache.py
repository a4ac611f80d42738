"""The empty prompt's text embedding of the diffusion backbones, computed once and cached on disk.

The embedding is keyed by (model id, revision, ``variant`` -- e.g. the text encoder's dtype) and stored as
safetensors under ``$VIDPROBE_CACHE`` (default ``~/.cache/vidprobe``)``/text_embeds``; the text encoder is loaded
only when the cache misses (see :mod:`vidprobe.backbones.diffusion`). A precomputed file can be passed instead.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable

import torch


def cache_root() -> Path:
    return Path(os.environ.get("VIDPROBE_CACHE", Path.home() / ".cache" / "vidprobe"))


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "model"


def text_cache_path(
    model_id: str, revision: str | None, cache_dir: str | Path | None = None, variant: str | None = None
) -> Path:
    """Cache file of a model's empty-prompt embedding; ``variant`` (e.g. the text encoder's dtype) keys it further."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "text_embeds"
    key = f"{model_id}@{revision or 'main'}" + (f"#{variant}" if variant else "")
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return root / f"{_safe_name(key)}-{digest}.safetensors"


def save_tensor_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from vidprobe.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_text_embeds(path: str | Path) -> torch.Tensor:
    """A precomputed prompt embedding: safetensors with key ``prompt_embeds`` or a single tensor; ``[1, L, D]``."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text embedding file not found: {p}")
    try:
        d = load_file(str(p))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: not a readable safetensors file ({e})") from e
    if "prompt_embeds" in d:
        t = d["prompt_embeds"]
    elif len(d) == 1:
        t = next(iter(d.values()))
    else:
        raise ValueError(f"{p}: field 'prompt_embeds' missing (found {sorted(d)})")
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] != 1:
        raise ValueError(f"{p}: field 'prompt_embeds' must be [1, L, D], got {tuple(t.shape)}")
    return t


def empty_prompt_embeds(
    model_id: str,
    revision: str | None,
    compute: Callable[[], torch.Tensor],
    cache_dir: str | Path | None = None,
    path: str | Path | None = None,
    variant: str | None = None,
) -> torch.Tensor:
    """The empty prompt's embedding ``[1, L, D]`` (CPU): from ``path``, the disk cache, or ``compute()`` (then cached)."""
    if path is not None:
        return load_text_embeds(path)
    cache = text_cache_path(model_id, revision, cache_dir, variant)
    if cache.is_file():
        return load_text_embeds(cache)
    emb = compute().detach().cpu()
    meta = {"model_id": model_id, "revision": revision or "main", "prompt": "", "variant": variant or ""}
    save_tensor_atomic(cache, {"prompt_embeds": emb}, meta)
    return emb
