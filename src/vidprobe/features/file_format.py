"""The feature file format: one safetensors file per (video, layer, timestep); its writer and header parser.

A feature file holds two tensors and string metadata:

* ``features [N,h,w,C]``: the ``N`` feature maps of one video, fp16 by
  default (bf16 / fp32 on request, :data:`~vidprobe.features.layout.DTYPES`);
* ``frame_index [T_video]`` int64: the map serving each input frame
  (``features[frame_index[t]]`` is frame ``t``'s map);
* metadata: ``format`` (:data:`FILE_FORMAT`), ``shape``, ``dtype``, and what
  the extractor adds (``video_id``, ``layer``, ``timestep``, ``tau``, ``source``,
  ``backbone``, ``frame_layout``).

An encoded file (:mod:`vidprobe.features.codec`) keeps ``features`` as
``[N,h,w,C']`` in the codec's dtype (int8, float8_e4m3fn, or the storage
dtype after PCA) plus the quantiser's per-channel float32 tensors; its
metadata adds ``codec`` and ``encoded_shape`` (``shape`` and ``dtype`` stay
the decoded ones).

The safetensors layout (the documented format): an 8-byte little-endian
header length ``n``, ``n`` bytes of JSON (``{name: {dtype, shape,
data_offsets: [a, b]}, "__metadata__": {...}}``), then the tensor data;
offsets count from the end of the header. :func:`parse_header` reads and
checks that header (every tensor inside the file, sizes consistent) without
touching the data, so a reader can slice single maps
(:mod:`vidprobe.features.byte_ranges`). Writes are atomic
(:func:`vidprobe.atomic.atomic_write_bytes`, fsync'ed).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vidprobe.atomic import atomic_write_bytes
from vidprobe.features.byte_ranges import read_exact
from vidprobe.features.layout import DTYPES, FeatureStoreError, dtype_name

__all__ = [
    "FILE_FORMAT",
    "ST_DTYPES",
    "ST_NAMES",
    "ST_ITEMSIZE",
    "TensorInfo",
    "FileHeader",
    "write_feature_file",
    "parse_header",
]

FILE_FORMAT = "vidprobe-features/1"
#: safetensors dtype strings of the tensors vidprobe writes, and back
ST_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "I64": torch.int64, "I8": torch.int8}
if hasattr(torch, "float8_e4m3fn"):  # encoded files (vidprobe.features.codec: fp8)
    ST_DTYPES["F8_E4M3"] = torch.float8_e4m3fn
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
#: bytes per element of every dtype a safetensors header may name
ST_ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def write_feature_file(
    path: str | Path,
    features: torch.Tensor,
    frame_index: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    dtype: str | torch.dtype = "fp16",
    encoder: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> int:
    """Write one feature file atomically; returns the bytes written.

    Refuses (before writing anything) features that are not ``[N,h,w,C]``,
    non-finite after the cast to the storage dtype (fp16 overflows above
    65504), or a frame index outside ``[0, N)``. ``encoder`` (a
    :class:`vidprobe.features.codec.Encoder`) turns the cast features into the
    file's tensors and names its codec in the metadata (``codec``).
    """
    from safetensors.torch import save

    path = Path(path)
    dt = DTYPES[dtype_name(dtype)]
    if features.dim() != 4:
        raise FeatureStoreError(f"{path}: features must be [N,h,w,C], got shape {tuple(features.shape)}")
    fi = torch.as_tensor(frame_index).detach().to("cpu", torch.int64).reshape(-1).contiguous()
    n = features.shape[0]
    if fi.numel() == 0:
        raise FeatureStoreError(f"{path}: frame_index is empty")
    if int(fi.min()) < 0 or int(fi.max()) >= n:
        raise FeatureStoreError(f"{path}: frame_index points outside [0, {n}) (range {int(fi.min())}..{int(fi.max())})")
    feats = features.detach().to("cpu", dt).contiguous()
    if not torch.isfinite(feats).all():
        peak = float(features.detach().float().abs().nan_to_num(0, 0, 0).max())
        why = "NaN/Inf in features" if not torch.isfinite(features).all() else f"overflow in {dtype_name(dt)} (max |x| = {peak:.4g})"
        raise FeatureStoreError(f"{path}: {why}")
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
    meta.setdefault("format", FILE_FORMAT)
    meta["shape"] = json.dumps(list(feats.shape))
    meta["dtype"] = dtype_name(dt)
    tensors = {"features": feats}
    if encoder is not None:
        tensors = encoder(feats)
        meta["codec"] = encoder.name
        meta["encoded_shape"] = json.dumps(list(tensors["features"].shape))
    data = save({**tensors, "frame_index": fi}, metadata=meta)
    return atomic_write_bytes(path, data, fsync=True)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


@dataclass(frozen=True)
class FileHeader:
    path: Path
    size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    header_bytes: int  # 8 + JSON length

    @property
    def features(self) -> TensorInfo:
        return self.tensors["features"]


def parse_header(fd: int, path: Path, size: int) -> FileHeader:
    """Parse and check a safetensors header (8-byte little-endian length, then JSON)."""
    if size == 0:
        raise FeatureStoreError(f"{path}: empty file (0 bytes): not a safetensors feature file")
    if size < 8:
        raise FeatureStoreError(f"{path}: truncated file ({size} bytes, the header length alone takes 8)")
    (n,) = struct.unpack("<Q", read_exact(fd, 8, 0, path, "the header length"))
    if n > _MAX_HEADER or 8 + n > size:
        raise FeatureStoreError(f"{path}: header length {n} does not fit the file ({size} bytes): truncated or not a safetensors file")
    try:
        raw = json.loads(read_exact(fd, n, 8, path, "the header"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FeatureStoreError(f"{path}: header is not valid JSON ({e}): corrupt file") from None
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"{path}: header is not a JSON object: corrupt file")
    meta = raw.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    base = 8 + n
    for name, t in raw.items():
        try:
            dt, shape, (a, b) = t["dtype"], tuple(int(s) for s in t["shape"]), t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FeatureStoreError(f"{path}: tensor {name!r} has a malformed header entry: corrupt file") from None
        need = math.prod(shape) * ST_ITEMSIZE.get(dt, 0)
        if dt not in ST_ITEMSIZE or b - a != need or a < 0:
            raise FeatureStoreError(f"{path}: tensor {name!r}: header says {dt} {list(shape)} but spans {b - a} bytes: corrupt file")
        if base + b > size:
            raise FeatureStoreError(
                f"{path}: truncated file: tensor {name!r} needs bytes up to {base + b} but the file has {size}"
            )
        tensors[name] = TensorInfo(dt, shape, base + a, base + b)
    return FileHeader(path, size, dict(meta), tensors, base)
