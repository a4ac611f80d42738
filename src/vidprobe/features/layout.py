"""The feature store's names: key directories, video file names, storage dtypes, noise levels, its error type.

Inside a store root (:mod:`vidprobe.features.store`)::

    L020_T749/<video id, '/' -> '__'>.safetensors   layer 20, scheduler index 749 (tau 0.251)
    L024_Tnone/...                                   timestep None: models without diffusion time
    Llast_Tnone/...                                  layer -1: the model's final, normalised output
    .locks/                                          per-video lock files of running extractions

A key is ``(layer, timestep)``; video ids map to file names one to one
(:func:`check_video_id` refuses ids that would not map back).
"""

from __future__ import annotations

import torch

__all__ = [
    "SUFFIX",
    "LOCK_DIR",
    "DTYPES",
    "Key",
    "FeatureStoreError",
    "dtype_name",
    "tau_of",
    "key_dirname",
    "parse_key_dirname",
    "check_video_id",
    "video_filename",
    "video_from_filename",
]

SUFFIX = ".safetensors"
LOCK_DIR = ".locks"

#: storage dtypes of the ``features`` tensor (the store's ``dtype`` setting)
DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

Key = tuple[int, "int | None"]  # (layer, timestep); timestep None for models without diffusion time


class FeatureStoreError(ValueError):
    """A feature store (or one of its files) is missing, corrupt or incompatible; the message names the file."""


def dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        for k, v in DTYPES.items():
            if v == dtype:
                return k
        raise FeatureStoreError(f"unsupported storage dtype {dtype}; use one of {', '.join(DTYPES)}")
    d = str(dtype).lower()
    alias = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32"}
    d = alias.get(d, d)
    if d not in DTYPES:
        raise FeatureStoreError(f"unsupported storage dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return d


def tau_of(timestep: int | None, num_train_timesteps: int = 1000) -> float | None:
    """Noise level tau = 1 - index/1000 of a scheduler index (None for non-diffusion models)."""
    if timestep is None:
        return None
    return round(1.0 - timestep / num_train_timesteps, 6)


def key_dirname(layer: int, timestep: int | None) -> str:
    """``L020_T749``; layer -1 (the model's final, normalised output) is ``Llast``."""
    if int(layer) < -1:
        raise FeatureStoreError(f"layer must be >= 0, or -1 for the model's final output, got {layer}")
    if timestep is not None and int(timestep) < 0:
        raise FeatureStoreError(f"timestep must be >= 0 or None, got {timestep}")
    lname = "last" if int(layer) == -1 else f"{int(layer):03d}"
    return f"L{lname}_T{'none' if timestep is None else int(timestep)}"


def parse_key_dirname(name: str) -> Key | None:
    if not (name.startswith("L") and "_T" in name):
        return None
    a, b = name[1:].split("_T", 1)
    try:
        return (-1 if a == "last" else int(a)), (None if b == "none" else int(b))
    except ValueError:
        return None


def check_video_id(video_id: str) -> str:
    """Video ids become file names ('/' -> '__'); refuse ids that would not map back uniquely."""
    bad = None
    if not isinstance(video_id, str) or not video_id:
        bad = "must be a non-empty string"
    elif "__" in video_id:
        bad = "must not contain '__' (it encodes '/' in file names)"
    elif video_id.startswith(".") or "/." in video_id:
        bad = "must not start a path component with '.'"
    elif "\\" in video_id or "\x00" in video_id:
        bad = "must not contain a backslash or NUL"
    elif video_id.startswith("/") or video_id.endswith("/") or "//" in video_id:
        bad = "must not start or end with '/' or contain '//'"
    if bad:
        raise FeatureStoreError(f"video id {video_id!r} {bad}")
    return video_id


def video_filename(video_id: str) -> str:
    return check_video_id(video_id).replace("/", "__") + SUFFIX


def video_from_filename(name: str) -> str:
    return name[: -len(SUFFIX)].replace("__", "/")
