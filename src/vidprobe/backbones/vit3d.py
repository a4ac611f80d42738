"""Checkpoint loading for the own VGGT and Fast3R implementations.

Neither model is on PyPI (no installable ``vggt`` / ``fast3r`` package), so
vidprobe carries small implementations (:mod:`vidprobe.backbones.model_vggt`,
:mod:`vidprobe.backbones.model_fast3r`, built from :mod:`vidprobe.nn`) whose
parameter names and shapes match the official checkpoints (see
``tests/fixtures/*_keys.json``). This module reads and loads them:

* :func:`resolve_checkpoint` -- a checkpoint file from a local file, a local
  directory or a hub id;
* :func:`load_state_dict_file` / :func:`load_into` -- read a checkpoint
  (safetensors, or ``torch.load(weights_only=True)``), drop documented unused
  prefixes, load strictly;
* :func:`param_shapes` -- names and shapes of a model's persistent state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn



# ----------------------------------------------------------------- checkpoints
CHECKPOINT_FILES = ("model.safetensors", "model.pt", "pytorch_model.bin")


def resolve_checkpoint(model_id: str | os.PathLike, revision: str | None = None,
                       filenames: Sequence[str] = CHECKPOINT_FILES) -> Path:
    """A checkpoint file: ``model_id`` is a file, a directory holding one of ``filenames``, or a hub id."""
    p = Path(model_id)
    if p.is_file():
        return p
    if p.is_dir():
        for name in filenames:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: no checkpoint file found (looked for {', '.join(filenames)})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise FileNotFoundError(f"{model_id}: not a local path and huggingface_hub is not installed") from e
    errors = []
    for name in filenames:
        try:
            return Path(hf_hub_download(str(model_id), name, revision=revision))
        except Exception as e:  # noqa: BLE001 - try the next file name
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise FileNotFoundError(f"{model_id}: could not fetch a checkpoint from the hub:\n  " + "\n  ".join(errors))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch file via ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def load_into(model: nn.Module, state: dict[str, torch.Tensor], drop_prefixes: Iterable[str] = (),
              where: str = "checkpoint") -> list[str]:
    """Load ``state`` strictly after dropping keys under ``drop_prefixes``; returns the dropped keys.

    Raises a ValueError naming missing/unexpected keys and shape mismatches.
    """
    drop = tuple(drop_prefixes)
    dropped = [k for k in state if drop and k.startswith(drop)]
    kept = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    own = model.state_dict()
    missing = sorted(set(own) - set(kept))
    unexpected = sorted(set(kept) - set(own))
    bad = sorted(k for k in set(own) & set(kept) if tuple(own[k].shape) != tuple(kept[k].shape))
    if missing or unexpected or bad:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)} keys, e.g. {missing[:5]}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)} keys, e.g. {unexpected[:5]}")
        if bad:
            lines.append("shape mismatch: " + ", ".join(f"{k} {tuple(kept[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:5]))
        raise ValueError(f"{where}: does not match {type(model).__name__}: " + "; ".join(lines))
    model.load_state_dict(kept, strict=True)
    return dropped


def param_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{name: shape}`` of the persistent state (what a checkpoint holds)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
