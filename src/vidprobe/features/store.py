"""The feature store: one safetensors file per (video, layer, timestep) plus a manifest.

Layout::

    <root>/manifest.json                         store-wide settings and the (layer, timestep) keys
    <root>/L020_T749/<video id, '/' -> '__'>.safetensors
    <root>/L024_Tnone/...                        (timestep None: models without diffusion time)

Each file holds ``features [N,h,w,C]`` (fp16 by default, bf16/fp32 on request)
and ``frame_index [T_video]`` int64 (input frame -> feature map), plus string
metadata (video id, layer, timestep, shape, source dataset).

Writes are atomic: the bytes go to a hidden temp file in the same directory,
are fsync'ed, then ``os.replace``'d over the target; the manifest is rewritten
the same way under a file lock. A reader therefore sees either the old file
or the new one, never a partial one.

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
import json
import math
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from filelock import FileLock

from vidprobe.atomic import atomic_path, atomic_write_bytes, write_all  # noqa: F401 (atomic_write_bytes re-exported)

STORE_FORMAT = "vidprobe-feature-store/1"
FILE_FORMAT = "vidprobe-features/1"
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
LOCK_DIR = ".locks"

DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# safetensors dtype strings
_ST_DTYPE = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "I64": torch.int64}
_ST_NAME = {v: k for k, v in _ST_DTYPE.items()}
_ST_ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit

# Settings that, when they differ, make features incomparable; a run with other
# values is refused on an existing store. (The package version is recorded, not compared.)
SETTING_FIELDS = ("backbone", "model_id", "revision", "dtype", "input_hw", "frame_layout", "num_frames", "backbone_kwargs")
# backbone kwargs that do not change the features (only where they are computed)
NEUTRAL_KWARGS = frozenset({"device"})

Key = tuple[int, "int | None"]

_pread = os.preadv  # indirection so tests can count every byte the reader asks the OS for


class FeatureStoreError(ValueError):
    """A feature store (or one of its files) is missing, corrupt or incompatible; the message names the file."""


# --------------------------------------------------------------------------- names


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


# --------------------------------------------------------------------------- atomic writes


def _write_all(fh, data) -> None:
    """Write ``data`` to ``fh`` (one function so tests can fail it half-way, like a full disk)."""
    write_all(fh, data)


def _write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> int:
    """Atomic, fsync'ed write of one store file (:func:`vidprobe.atomic.atomic_path`); returns the bytes."""
    with atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as fh:
            _write_all(fh, data)
    return len(data)


def write_feature_file(
    path: str | Path,
    features: torch.Tensor,
    frame_index: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    dtype: str | torch.dtype = "fp16",
) -> int:
    """Write one feature file atomically; returns the bytes written.

    Refuses (before writing anything) features that are not ``[N,h,w,C]``,
    non-finite after the cast to the storage dtype (fp16 overflows above
    65504), or a frame index outside ``[0, N)``.
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
    data = save({"features": feats, "frame_index": fi}, metadata=meta)
    return _write_bytes(path, data)


# --------------------------------------------------------------------------- header parsing


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


def _read_exact(fd: int, n: int, offset: int, path: Path, what: str) -> bytes:
    out = bytearray(n)
    _read_into(fd, memoryview(out), offset, path, what)
    return bytes(out)


def _read_into(fd: int, buf: memoryview, offset: int, path: Path, what: str) -> int:
    got = 0
    while got < len(buf):
        k = _pread(fd, [buf[got:]], offset + got)
        if k == 0:
            raise FeatureStoreError(f"{path}: file truncated while reading {what} (got {got} of {len(buf)} bytes)")
        got += k
    return got


def parse_header(fd: int, path: Path, size: int) -> FileHeader:
    """Parse and check a safetensors header (8-byte little-endian length, then JSON)."""
    if size == 0:
        raise FeatureStoreError(f"{path}: empty file (0 bytes): not a safetensors feature file")
    if size < 8:
        raise FeatureStoreError(f"{path}: truncated file ({size} bytes, the header length alone takes 8)")
    (n,) = struct.unpack("<Q", _read_exact(fd, 8, 0, path, "the header length"))
    if n > _MAX_HEADER or 8 + n > size:
        raise FeatureStoreError(f"{path}: header length {n} does not fit the file ({size} bytes): truncated or not a safetensors file")
    try:
        raw = json.loads(_read_exact(fd, n, 8, path, "the header"))
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
        need = math.prod(shape) * _ST_ITEMSIZE.get(dt, 0)
        if dt not in _ST_ITEMSIZE or b - a != need or a < 0:
            raise FeatureStoreError(f"{path}: tensor {name!r}: header says {dt} {list(shape)} but spans {b - a} bytes: corrupt file")
        if base + b > size:
            raise FeatureStoreError(
                f"{path}: truncated file: tensor {name!r} needs bytes up to {base + b} but the file has {size}"
            )
        tensors[name] = TensorInfo(dt, shape, base + a, base + b)
    return FileHeader(path, size, dict(meta), tensors, base)


# --------------------------------------------------------------------------- manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _canon(v: Any) -> Any:
    """JSON round trip so tuples/lists and int/str keys compare as they are stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def store_settings(
    backbone: str,
    model_id: str | None = None,
    revision: str | None = None,
    dtype: str = "fp16",
    input_hw: Sequence[int] | None = None,
    frame_layout: str | None = None,
    num_frames: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The store-wide settings recorded in (and compared against) the manifest."""
    kw = {k: v for k, v in (backbone_kwargs or {}).items() if k not in NEUTRAL_KWARGS}
    return _canon(
        {
            "backbone": backbone,
            "model_id": model_id,
            "revision": revision,
            "dtype": dtype_name(dtype),
            "input_hw": list(input_hw) if input_hw is not None else None,
            "frame_layout": frame_layout,
            "num_frames": num_frames,
            "backbone_kwargs": kw,
        }
    )


def _settings_diff(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    out = []
    for f in SETTING_FIELDS:
        a, b = have.get(f), want.get(f)
        if f == "backbone_kwargs":
            a = {k: v for k, v in (a or {}).items() if k not in NEUTRAL_KWARGS}
            b = {k: v for k, v in (b or {}).items() if k not in NEUTRAL_KWARGS}
        if _canon(a) != _canon(b):
            out.append(f"{f}: store has {json.dumps(a)}, this run has {json.dumps(b)}")
    return out


def manifest_lock(root: str | Path, timeout: float = 120.0) -> FileLock:
    return FileLock(str(Path(root) / f"{MANIFEST}.lock"), timeout=timeout)


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FeatureStoreError(f"{path}: no manifest: {Path(root)} is not a feature store (run `vidprobe extract` first)")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FeatureStoreError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
        raise FeatureStoreError(f"{path}: field 'format': expected {STORE_FORMAT!r}, got {m.get('format') if isinstance(m, dict) else m!r}")
    for f in ("settings", "keys"):
        if f not in m:
            raise FeatureStoreError(f"{path}: field {f!r} missing")
    return m


def prepare_store(
    root: str | Path,
    settings: dict[str, Any],
    keys: Iterable[Key],
    source: str | None = None,
) -> dict[str, Any]:
    """Create the store or check that ``settings`` match it, and add ``keys``; atomic and locked.

    Raises FeatureStoreError naming every differing field when the store was
    written with another model or other settings.
    """
    from vidprobe import __version__

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys = [(int(layer), None if t is None else int(t)) for layer, t in keys]
    with manifest_lock(root):
        path = root / MANIFEST
        for e in os.scandir(root):  # temp manifests left by a killed writer (we hold the lock)
            if e.name.startswith(f".{MANIFEST}.") and e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
        if path.exists():
            m = read_manifest(root)
            diff = _settings_diff(m["settings"], settings)
            if diff:
                raise FeatureStoreError(
                    f"{path}: this store was written with other settings; refusing to mix features. "
                    "Differing fields:\n  " + "\n  ".join(diff) + "\nUse another --out directory."
                )
        else:
            m = {"format": STORE_FORMAT, "vidprobe_version": __version__, "created": _now(), "settings": settings, "keys": [], "sources": []}
        have = {(k["layer"], k["timestep"]) for k in m["keys"]}
        changed = not path.exists()
        for layer, t in keys:
            if (layer, t) not in have:
                m["keys"].append({"layer": layer, "timestep": t, "tau": tau_of(t), "dir": key_dirname(layer, t)})
                have.add((layer, t))
                changed = True
        m["keys"].sort(key=lambda k: (k["layer"], -1 if k["timestep"] is None else k["timestep"]))
        if source and source not in m.setdefault("sources", []):
            m["sources"].append(source)
            changed = True
        if changed:
            m["updated"] = _now()
            m.setdefault("writers", [])
            if __version__ not in m["writers"]:
                m["writers"].append(__version__)
            _write_bytes(path, (json.dumps(m, indent=2) + "\n").encode())
        for layer, t in keys:
            (root / key_dirname(layer, t)).mkdir(exist_ok=True)
        return m


# --------------------------------------------------------------------------- reader


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

    def _header(self, fd: int, path: Path) -> tuple[FileHeader, torch.Tensor]:
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
        if f.dtype not in ("F16", "BF16", "F32"):
            raise FeatureStoreError(f"{path}: tensor 'features' has dtype {f.dtype}; expected a float type (F16, BF16, F32)")
        want = _ST_NAME[DTYPES[self.dtype_name]]
        if f.dtype != want:
            raise FeatureStoreError(f"{path}: tensor 'features' has dtype {f.dtype} but the store's manifest says {self.dtype_name} ({want})")
        if len(f.shape) != 4:
            raise FeatureStoreError(f"{path}: tensor 'features' must be [N,h,w,C], got shape {list(f.shape)}")
        if fi.dtype != "I64" or len(fi.shape) != 1:
            raise FeatureStoreError(f"{path}: tensor 'frame_index' must be int64 [T], got {fi.dtype} {list(fi.shape)}")
        idx = torch.empty(fi.shape, dtype=torch.int64)
        if idx.numel():
            _read_into(fd, memoryview(idx.numpy()).cast("B"), fi.start, path, "frame_index")
        self.bytes_read += fi.end - fi.start
        n = f.shape[0]
        if idx.numel() == 0:
            raise FeatureStoreError(f"{path}: frame_index is empty")
        if int(idx.max()) >= n or int(idx.min()) < 0:
            bad = int(((idx >= n) | (idx < 0)).nonzero()[0])
            raise FeatureStoreError(
                f"{path}: frame_index points past the end: frame {bad} -> map {int(idx[bad])}, but the file has {n} maps"
            )
        out = (h, idx)
        with self._lock:
            self._cache[ck] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

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

        Reads only the distinct maps those frames need. ``dtype=None`` keeps the
        storage dtype. With ``return_maps=True`` returns ``(features, map_ids)``
        where ``map_ids[i]`` is the map that served ``frames[i]``.
        """
        path = self.path(video, layer, timestep)
        fd = self._open(path)
        try:
            h, idx = self._header(fd, path)
            T = idx.numel()
            if frames is None:
                fr = torch.arange(T)
            else:
                fr = torch.as_tensor(frames, dtype=torch.int64).reshape(-1)
            if fr.numel() and (int(fr.max()) >= T or int(fr.min()) < 0):
                bad = [int(x) for x in fr if int(x) >= T or int(x) < 0]
                raise FeatureStoreError(f"{path}: frame(s) {bad} out of range: the video has {T} frames in frame_index")
            maps = idx[fr]
            uniq, inv = torch.unique(maps, sorted=True, return_inverse=True)
            f = h.features
            stored = _ST_DTYPE[f.dtype]
            _, hh, ww, cc = f.shape
            per_map = hh * ww * cc * _ST_ITEMSIZE[f.dtype]
            buf = torch.empty((uniq.numel(), hh, ww, cc), dtype=stored)
            runs = _runs(uniq.tolist())
            if self.backend == "pread":
                flat = memoryview(buf.view(torch.uint8).numpy()).cast("B") if buf.numel() else memoryview(b"")
                pos = 0
                for a, b in runs:
                    nb = (b - a) * per_map
                    _read_into(fd, flat[pos : pos + nb], f.start + a * per_map, path, f"maps {a}..{b - 1}")
                    pos += nb
                    self.bytes_read += nb
            else:
                pos = 0
                try:
                    from safetensors import safe_open

                    with safe_open(str(path), framework="pt") as st:
                        sl = st.get_slice("features")
                        for a, b in runs:
                            buf[pos : pos + b - a] = sl[a:b]
                            pos += b - a
                            self.bytes_read += (b - a) * per_map
                except Exception as e:  # safetensors raises its own error type
                    raise FeatureStoreError(f"{path}: unreadable safetensors file ({e})") from None
        finally:
            os.close(fd)
        if dtype is not None and buf.dtype != dtype:
            buf = buf.to(dtype)
        # a float32 sum propagates any NaN/Inf and is much cheaper than isfinite on fp16; only
        # when it is not finite (or overflowed) do we look for the culprit maps
        if self.check_finite and buf.numel() and not torch.isfinite(buf.sum(dtype=torch.float32)):
            bad_maps = (~torch.isfinite(buf)).flatten(1).any(1).nonzero().flatten().tolist()
            if bad_maps:
                bad = sorted({int(uniq[i]) for i in bad_maps})
                raise FeatureStoreError(f"{path}: NaN/Inf in tensor 'features' at map(s) {bad}")
        identity = inv.numel() == uniq.numel() and torch.equal(inv, torch.arange(inv.numel()))
        out = buf if identity else buf[inv]
        return (out, maps) if return_maps else out

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
                entry["shape"] = list(h.features.shape)
                entry["channels"] = h.features.shape[-1]
            keys.append(entry)
        return {"root": str(self.root), "settings": self.settings, "vidprobe_version": self.manifest.get("vidprobe_version"),
                "sources": self.manifest.get("sources", []), "keys": keys}

    def channels(self, layer: int, timestep: int | None) -> int:
        vids = self.videos(layer, timestep)
        if not vids:
            raise FeatureStoreError(f"{self.root}: no features for layer {layer}, timestep {timestep}")
        return self.header(vids[0], layer, timestep).features.shape[-1]


def _runs(sorted_ids: list[int]) -> list[tuple[int, int]]:
    """[0,1,2,5,6,9] -> [(0,3),(5,7),(9,10)] (half-open runs of consecutive ids)."""
    runs: list[tuple[int, int]] = []
    for i in sorted_ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
