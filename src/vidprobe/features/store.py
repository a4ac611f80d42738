"""The feature store reader: :class:`FeatureStore` slices only the feature maps a sample needs.

Layout::

    <root>/manifest.json                         store-wide settings and the (layer, timestep) keys
    <root>/L020_T749/<video id, '/' -> '__'>.safetensors
    <root>/L024_Tnone/...                        (timestep None: models without diffusion time)

Each file holds ``features [N,h,w,C]`` (fp16 by default, bf16/fp32 on request)
and ``frame_index [T_video]`` int64 (input frame -> feature map), plus string
metadata (video id, layer, timestep, shape, source dataset).

The parts, one concept each (their public names are re-exported here):

* :mod:`vidprobe.features.layout`: key directories, video file names,
  storage dtypes, :class:`FeatureStoreError`;
* :mod:`vidprobe.features.file_format`: the feature file, its atomic writer
  :func:`write_feature_file` and its header parser;
* :mod:`vidprobe.features.byte_ranges`: reading exact byte ranges;
* :mod:`vidprobe.features.manifest`: settings, keys, :func:`prepare_store`.

Writes are atomic (:mod:`vidprobe.atomic`): the bytes go to a hidden temp
file in the same directory, are fsync'ed, then ``os.replace``'d over the
target; the manifest is rewritten the same way under a file lock. A reader
therefore sees either the old file or the new one, never a partial one.

A store may be encoded (:mod:`vidprobe.features.codec`: ``pca:K``, ``int8``,
``fp8``, ``pca:K+int8``; the manifest's ``codec`` field): the reader decodes
every map it reads to the store's dtype, so callers see the same shapes and
dtype as from a plain store; the encoded tensor keeps its ``[N,h,w,C']``
layout, so the byte ranges below are those of the encoded maps.

Reading only what a sample needs
--------------------------------
``FeatureStore.read(video, layer, timestep, frames)`` looks up the maps the
requested frames need (``frame_index[frames]``, de-duplicated, merged into
contiguous runs) and reads exactly those byte ranges. The default ``pread``
backend parses the safetensors header (8-byte length + JSON, the documented
format) and ``os.preadv``'s each run into a pre-allocated tensor with
``POSIX_FADV_RANDOM`` set, so the kernel does not read ahead. The ``mmap``
backend uses ``safetensors.safe_open(...).get_slice`` instead; it touches the
same pages, but page faults on a memory map trigger the device's read-ahead
(8 MiB on some VMs), which can pull in most of the file: see
``benchmarks/bench_store.py`` for both measured.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch

from vidprobe.atomic import atomic_write_bytes  # re-exported: the one atomic writer
from vidprobe.features.byte_ranges import map_runs, mmap_runs, pread_runs, read_into
from vidprobe.features.codec import Basis, Codec, CodecError, basis_path, decode, load_basis, manifest_codecs, parse_codec
from vidprobe.features.file_format import (
    FILE_FORMAT,
    ST_DTYPES,
    ST_ITEMSIZE,
    ST_NAMES,
    FileHeader,
    TensorInfo,
    parse_header,
    write_feature_file,
)
from vidprobe.features.layout import (
    DTYPES,
    LOCK_DIR,
    SUFFIX,
    FeatureStoreError,
    Key,
    check_video_id,
    dtype_name,
    key_dirname,
    parse_key_dirname,
    tau_of,
    video_filename,
    video_from_filename,
)
from vidprobe.features.manifest import (
    MANIFEST,
    NEUTRAL_KWARGS,
    SETTING_FIELDS,
    STORE_FORMAT,
    manifest_lock,
    prepare_store,
    read_manifest,
    store_settings,
)

__all__ = [
    "FeatureStore",
    "FeatureStoreError",
    "Key",
    "DTYPES",
    "SUFFIX",
    "LOCK_DIR",
    "FILE_FORMAT",
    "STORE_FORMAT",
    "MANIFEST",
    "SETTING_FIELDS",
    "NEUTRAL_KWARGS",
    "FileHeader",
    "TensorInfo",
    "atomic_write_bytes",
    "check_video_id",
    "dtype_name",
    "key_dirname",
    "manifest_lock",
    "parse_header",
    "parse_key_dirname",
    "prepare_store",
    "read_manifest",
    "store_settings",
    "tau_of",
    "video_filename",
    "video_from_filename",
    "write_feature_file",
]


class FeatureStore:
    """Read a feature store; slices only the feature maps a sample needs.

    ``backend``: ``"pread"`` (default; exact byte ranges, no read-ahead) or
    ``"mmap"`` (``safetensors.safe_open(...).get_slice``).
    ``check_finite``: raise on NaN/Inf in what was read.
    """

    def __init__(self, root: str | Path, backend: str = "pread", check_finite: bool = True, cache_size: int = 4096):
        if backend not in ("pread", "mmap"):
            raise ValueError(f"backend must be 'pread' or 'mmap', got {backend!r}")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.settings: dict[str, Any] = self.manifest["settings"]
        self.dtype_name: str = self.settings.get("dtype", "fp16")
        #: the store's codec (vidprobe.features.codec; None: plain) and the codecs a file may carry
        self.codec, self._file_codecs = manifest_codecs(self.manifest, self.root / MANIFEST)
        self._bases: dict[tuple, Basis] = {}
        self.backend = backend
        self.check_finite = check_finite
        self._cache: OrderedDict[tuple, tuple[FileHeader, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.bytes_read = 0  # bytes of tensor data + headers asked of the OS (pread backend) / sliced (mmap)

    def __getstate__(self) -> dict:  # picklable for DataLoader workers (spawn): drop the lock and cache
        d = dict(self.__dict__)
        d["_lock"] = None
        d["_cache"] = OrderedDict()
        d["_bases"] = {}
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, backbone={self.settings.get('backbone')!r}, keys={self.keys()})"

    # -- listing
    def keys(self) -> list[Key]:
        return [(k["layer"], k["timestep"]) for k in self.manifest["keys"]]

    def path(self, video: str, layer: int, timestep: int | None) -> Path:
        return self.root / key_dirname(layer, timestep) / video_filename(video)

    def videos(self, layer: int, timestep: int | None) -> list[str]:
        """Video ids that have a file for (layer, timestep), sorted (temp files ignored)."""
        d = self.root / key_dirname(layer, timestep)
        if not d.is_dir():
            return []
        return sorted(video_from_filename(p.name) for p in os.scandir(d) if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def has(self, video: str, layer: int, timestep: int | None) -> bool:
        return self.path(video, layer, timestep).is_file()

    # -- headers
    def _open(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise FeatureStoreError(f"{path}: no such feature file (video not extracted for this layer/timestep?)") from None
        if hasattr(os, "posix_fadvise") and self.backend == "pread":
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return fd

    def _header(self, fd: int, path: Path) -> tuple[FileHeader, torch.Tensor, Codec | None, dict[str, torch.Tensor]]:
        st = os.fstat(fd)
        ck = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(ck)
            if hit is not None:
                self._cache.move_to_end(ck)
                return hit
        h = parse_header(fd, path, st.st_size)
        self.bytes_read += h.header_bytes
        for name in ("features", "frame_index"):
            if name not in h.tensors:
                raise FeatureStoreError(f"{path}: missing tensor {name!r} (has {sorted(h.tensors)})")
        f, fi = h.tensors["features"], h.tensors["frame_index"]
        codec = self._file_codec(h, path)
        if codec is None and f.dtype not in ("F16", "BF16", "F32"):
            raise FeatureStoreError(f"{path}: tensor 'features' has dtype {f.dtype}; expected a float type (F16, BF16, F32)")
        want = ST_NAMES[codec.encoded_dtype(self.dtype_name) if codec else DTYPES[self.dtype_name]]
        if f.dtype != want:
            how = f"codec {codec.name!r} of " if codec else ""
            raise FeatureStoreError(f"{path}: tensor 'features' has dtype {f.dtype} but the {how}store's manifest says "
                                    f"{self.dtype_name} ({want})")
        params = self._codec_params(fd, path, h, codec)
        if len(f.shape) != 4:
            raise FeatureStoreError(f"{path}: tensor 'features' must be [N,h,w,C], got shape {list(f.shape)}")
        if fi.dtype != "I64" or len(fi.shape) != 1:
            raise FeatureStoreError(f"{path}: tensor 'frame_index' must be int64 [T], got {fi.dtype} {list(fi.shape)}")
        idx = torch.empty(fi.shape, dtype=torch.int64)
        if idx.numel():
            read_into(fd, memoryview(idx.numpy()).cast("B"), fi.start, path, "frame_index")
        self.bytes_read += fi.end - fi.start
        n = f.shape[0]
        if idx.numel() == 0:
            raise FeatureStoreError(f"{path}: frame_index is empty")
        if int(idx.max()) >= n or int(idx.min()) < 0:
            bad = int(((idx >= n) | (idx < 0)).nonzero()[0])
            raise FeatureStoreError(
                f"{path}: frame_index points past the end: frame {bad} -> map {int(idx[bad])}, but the file has {n} maps"
            )
        out = (h, idx, codec, params)
        with self._lock:
            self._cache[ck] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _file_codec(self, h: FileHeader, path: Path) -> Codec | None:
        """The codec a file's metadata names; it must be the manifest's (or, mid in-place conversion, the old one)."""
        name = h.metadata.get("codec") or None
        if name not in self._file_codecs:
            try:
                parse_codec(name)
            except CodecError as e:
                raise CodecError(f"{path}: metadata 'codec': {e}") from None
            have = self.codec.name if self.codec else "none"
            raise CodecError(f"{path}: encoded with codec {name or 'none'!r} but the store's manifest says {have!r} "
                             "(an interrupted `vidprobe compress --in-place`? rerun it)")
        return self._file_codecs[name]

    def _codec_params(self, fd: int, path: Path, h: FileHeader, codec: Codec | None) -> dict[str, torch.Tensor]:
        """The quantiser's per-channel float32 tensors of an encoded file (read once, with the header)."""
        from vidprobe.features.codec import PARAMS

        out: dict[str, torch.Tensor] = {}
        c = h.features.shape[-1] if len(h.features.shape) == 4 else -1
        for name in PARAMS.get(codec.quant, ()) if codec and codec.quant else ():
            t = h.tensors.get(name)
            if t is None or t.dtype != "F32" or t.shape != (c,):
                got = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
                raise CodecError(f"{path}: codec {codec.name!r} needs tensor {name!r} F32 [{c}], got {got}")
            buf = torch.empty(c, dtype=torch.float32)
            read_into(fd, memoryview(buf.numpy()).cast("B"), t.start, path, name)
            self.bytes_read += t.end - t.start
            out[name] = buf
        return out

    def basis(self, layer: int, timestep: int | None, codec: Codec | None = None) -> Basis | None:
        """The PCA basis of a key for ``codec`` (default: the store's; None without PCA); loaded once."""
        codec = codec or self.codec
        if codec is None or not codec.pca:
            return None
        k = (codec.name, layer, timestep)
        if k not in self._bases:
            self._bases[k] = load_basis(basis_path(self.root, codec, layer, timestep), codec)
        return self._bases[k]

    def header(self, video: str, layer: int, timestep: int | None) -> FileHeader:
        path = self.path(video, layer, timestep)
        fd = self._open(path)
        try:
            return self._header(fd, path)[0]
        finally:
            os.close(fd)

    def frame_index(self, video: str, layer: int, timestep: int | None) -> torch.Tensor:
        """``[T_video]`` int64: the feature map serving each input frame."""
        path = self.path(video, layer, timestep)
        fd = self._open(path)
        try:
            return self._header(fd, path)[1].clone()
        finally:
            os.close(fd)

    def check(self, video: str, layer: int, timestep: int | None, full: bool = False) -> None:
        """Raise FeatureStoreError if the file is missing/unreadable; ``full`` also reads every map (NaN check)."""
        if full:
            self.read(video, layer, timestep, None)
        else:
            self.frame_index(video, layer, timestep)

    def is_valid(self, video: str, layer: int, timestep: int | None, full: bool = False) -> bool:
        try:
            self.check(video, layer, timestep, full)
        except FeatureStoreError:
            return False
        return True

    # -- reading
    def read(
        self,
        video: str,
        layer: int,
        timestep: int | None,
        frames: Sequence[int] | torch.Tensor | None = None,
        dtype: torch.dtype | None = torch.float32,
        return_maps: bool = False,
    ):
        """Features ``[len(frames), h, w, C]`` of the given input frames (all frames when ``None``).

        Reads only the distinct maps those frames need (decoded when the store has a codec).
        ``dtype=None`` keeps the storage dtype. With ``return_maps=True`` returns ``(features, map_ids)``
        where ``map_ids[i]`` is the map that served ``frames[i]``.
        """
        buf, maps, inv, _ = self._read_maps(video, layer, timestep, frames, dtype, every_map=False)
        identity = inv.numel() == buf.shape[0] and torch.equal(inv, torch.arange(inv.numel()))
        out = buf if identity else buf[inv]
        return (out, maps) if return_maps else out

    def maps(self, video: str, layer: int, timestep: int | None, dtype: torch.dtype | None = None):
        """``(features [N,h,w,C], frame_index [T])``: every map of the file (also those no frame uses), decoded,
        in the store's dtype by default: what :mod:`vidprobe.features.compress` re-encodes."""
        buf, _, _, idx = self._read_maps(video, layer, timestep, None, dtype, every_map=True)
        return buf, idx.clone()

    def _read_maps(self, video, layer, timestep, frames, dtype, every_map: bool):
        """``(distinct maps read, map of each frame, inverse index, frame_index)``; ``every_map``: all N maps."""
        path = self.path(video, layer, timestep)
        fd = self._open(path)
        try:
            h, idx, codec, params = self._header(fd, path)
            T = idx.numel()
            if frames is None:
                fr = torch.arange(T)
            else:
                fr = torch.as_tensor(frames, dtype=torch.int64).reshape(-1)
            if fr.numel() and (int(fr.max()) >= T or int(fr.min()) < 0):
                bad = [int(x) for x in fr if int(x) >= T or int(x) < 0]
                raise FeatureStoreError(f"{path}: frame(s) {bad} out of range: the video has {T} frames in frame_index")
            maps = idx[fr]
            f = h.features
            n, hh, ww, cc = f.shape
            if every_map:
                uniq, inv = torch.arange(n), torch.arange(n)
            else:
                uniq, inv = torch.unique(maps, sorted=True, return_inverse=True)
            per_map = hh * ww * cc * ST_ITEMSIZE[f.dtype]
            buf = torch.empty((uniq.numel(), hh, ww, cc), dtype=ST_DTYPES[f.dtype])
            runs = map_runs(uniq.tolist())
            if self.backend == "pread":
                chunks = pread_runs(fd, path, f.start, per_map, runs, buf)
            else:
                chunks = mmap_runs(path, "features", per_map, runs, buf)
            for nb in chunks:
                self.bytes_read += nb
        finally:
            os.close(fd)
        if codec is not None:  # decoded to the store's own dtype, then cast like a plain file
            buf = decode(buf, params, codec, self.basis(layer, timestep, codec), DTYPES[self.dtype_name])
        if dtype is not None and buf.dtype != dtype:
            buf = buf.to(dtype)
        # a float32 sum propagates any NaN/Inf and is much cheaper than isfinite on fp16; only
        # when it is not finite (or overflowed) do we look for the culprit maps
        if self.check_finite and buf.numel() and not torch.isfinite(buf.sum(dtype=torch.float32)):
            bad_maps = (~torch.isfinite(buf)).flatten(1).any(1).nonzero().flatten().tolist()
            if bad_maps:
                bad = sorted({int(uniq[i]) for i in bad_maps})
                raise FeatureStoreError(f"{path}: NaN/Inf in tensor 'features' at map(s) {bad}")
        return buf, maps, inv, idx

    def decoded_shape(self, h: FileHeader, layer: int, timestep: int | None) -> list[int]:
        """``[N,h,w,C]`` a read returns for the file with header ``h`` (C of the PCA basis for a PCA codec)."""
        shape = list(h.features.shape)
        codec = self._file_codecs.get(h.metadata.get("codec") or None)
        basis = self.basis(layer, timestep, codec) if codec is not None and codec.pca else None
        if basis is not None:
            shape[-1] = basis.mean.numel()
        return shape

    # -- summary
    def info(self) -> dict[str, Any]:
        """Settings plus, per (layer, timestep): videos, map shape (N, h, w, C), channels, dtype, bytes."""
        keys = []
        for k in self.manifest["keys"]:
            layer, t = k["layer"], k["timestep"]
            vids = self.videos(layer, t)
            entry = {"layer": layer, "timestep": t, "tau": k.get("tau"), "dir": k.get("dir"), "videos": len(vids),
                     "shape": None, "channels": None, "dtype": self.dtype_name, "bytes": 0}
            d = self.root / key_dirname(layer, t)
            entry["bytes"] = sum(os.path.getsize(d / video_filename(v)) for v in vids)
            if vids:
                h = self.header(vids[0], layer, t)
                entry["shape"] = self.decoded_shape(h, layer, t)
                entry["channels"] = entry["shape"][-1]
            keys.append(entry)
        return {"root": str(self.root), "settings": self.settings, "codec": self.manifest.get("codec"),
                "vidprobe_version": self.manifest.get("vidprobe_version"),
                "sources": self.manifest.get("sources", []), "keys": keys}

    def channels(self, layer: int, timestep: int | None) -> int:
        vids = self.videos(layer, timestep)
        if not vids:
            raise FeatureStoreError(f"{self.root}: no features for layer {layer}, timestep {timestep}")
        return self.decoded_shape(self.header(vids[0], layer, timestep), layer, timestep)[-1]
