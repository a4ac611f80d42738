"""Small I/O helpers shared by the dataset readers and writers.

* atomic writes (temp file in the same directory, then ``os.replace``);
* JSON / gzipped-JSON reading with errors that name the file;
* image, 16-bit PNG and mask decoding with errors that name the file and field;
* :func:`safe_join`, which refuses paths that escape the dataset root.

Every error raised here is a :class:`~vidprobe.data.base.DatasetError` whose
message starts with the file it is about.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from vidprobe.atomic import atomic_path as _atomic_path
from vidprobe.atomic import atomic_write_bytes  # the one atomic writer, re-exported for the readers
from vidprobe.data.base import DatasetError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "save_image",
    "read_json",
    "read_rgb",
    "read_uint16_png",
    "read_gray",
    "image_size",
    "write_float16_png",
    "read_float16_png",
    "safe_join",
    "get_field",
    "finite_floats",
]


# ----------------------------------------------------------------------------- writing


def atomic_write_json(path: str | Path, obj: Any, gz: bool | None = None, indent: int | None = None) -> Path:
    """Write JSON atomically; gzipped when ``gz`` (default: name ends in ``.gz``/``.jgz``)."""
    path = Path(path)
    if gz is None:
        gz = path.suffix in (".gz", ".jgz")
    data = json.dumps(obj, indent=indent).encode("utf8")
    if gz:
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return path


def save_image(path: str | Path, array: np.ndarray, **save_kw) -> Path:
    """Save a uint8 ``[H,W]``/``[H,W,3]`` or uint16 ``[H,W]`` array atomically (format from the suffix)."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError(f"{path}: 16-bit images must be [H,W], got {arr.shape}")
        im = Image.fromarray(arr)  # mode I;16
    elif arr.dtype == np.uint8:
        im = Image.fromarray(arr)
    elif arr.dtype == np.bool_:
        im = Image.fromarray(arr.astype(np.uint8) * 255).convert("1")
    else:
        raise ValueError(f"{path}: cannot save an image of dtype {arr.dtype}")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r} (jpg or png)")
    with _atomic_path(path, keep_suffix=True) as tmp:
        im.save(tmp, format=fmt, **save_kw)
    return path


def write_float16_png(path: str | Path, depth: np.ndarray) -> Path:
    """CO3D depth encoding: float16 bit patterns stored in a 16-bit grayscale PNG."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"{path}: depth must be [H,W], got {d.shape}")
    return save_image(path, d.astype(np.float16).view(np.uint16))


# ----------------------------------------------------------------------------- reading


def read_json(path: str | Path, gz: bool | None = None) -> Any:
    """Parse a (optionally gzipped) JSON file; errors name the file."""
    path = Path(path)
    if gz is None:
        gz = path.suffix in (".gz", ".jgz")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
        if gz:
            raw = gzip.decompress(raw)
        return json.loads(raw.decode("utf8"))
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: cannot read ({'gzip' if gz else 'file'} error: {e})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON: {e}") from e


def _open_image(path: Path, field: str) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{path}: field '{field}': file not found")
    try:
        im = Image.open(path)
        im.load()  # decode now so that truncated files fail here, not later
        return im
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError ...
        raise DatasetError(f"{path}: field '{field}': cannot decode image ({type(e).__name__}: {e})") from e


def image_size(path: str | Path, field: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image from its header (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: field '{field}': file not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{path}: field '{field}': cannot read image header ({type(e).__name__}: {e})") from e
    return h, w


def read_rgb(path: str | Path, field: str = "image") -> np.ndarray:
    """Decode an image as uint8 ``[H,W,3]``."""
    im = _open_image(Path(path), field)
    with im:
        return np.asarray(im.convert("RGB"))


def read_gray(path: str | Path, field: str = "mask") -> np.ndarray:
    """Decode an 8-bit/1-bit mask as uint8 ``[H,W]`` (1-bit masks come back as 0/255)."""
    im = _open_image(Path(path), field)
    with im:
        if im.mode in ("I", "I;16", "I;16B", "F"):
            raise DatasetError(f"{path}: field '{field}': expected an 8-bit or 1-bit mask, got mode {im.mode}")
        return np.asarray(im.convert("L"))


def read_uint16_png(path: str | Path, field: str = "depth") -> np.ndarray:
    """Decode a 16-bit grayscale PNG as uint16 ``[H,W]`` (PIL may hand it over as int32)."""
    im = _open_image(Path(path), field)
    with im:
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise DatasetError(f"{path}: field '{field}': expected a 16-bit grayscale PNG, got mode {im.mode}")
        a = np.asarray(im)
    if a.dtype != np.uint16:
        if a.min() < 0 or a.max() > 65535:
            raise DatasetError(f"{path}: field '{field}': values outside the 16-bit range")
        a = a.astype(np.uint16)
    return a


def read_float16_png(path: str | Path, field: str = "depth") -> np.ndarray:
    """CO3D depth decoding: 16-bit PNG -> reinterpret as float16 -> float32."""
    return read_uint16_png(path, field).view(np.float16).astype(np.float32)


# ----------------------------------------------------------------------------- paths and fields


def safe_join(root: str | Path, rel: Any, where: str = "", field: str = "path") -> Path:
    """``root / rel``, refusing anything that would leave ``root``.

    Rejects non-strings, empty strings, absolute paths, drive letters and any
    path whose resolved form (symlinks followed) is outside the resolved root.
    """
    pre = f"{where}: " if where else ""
    if not isinstance(rel, str) or not rel.strip():
        raise DatasetError(f"{pre}field '{field}': expected a relative path string, got {rel!r}")
    if "\x00" in rel:
        raise DatasetError(f"{pre}field '{field}': path contains a NUL byte")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise DatasetError(f"{pre}field '{field}': absolute path {rel!r} is not allowed (paths are relative to {root})")
    root_r = Path(root).resolve()
    full = (root_r / p).resolve()
    if full != root_r and root_r not in full.parents:
        raise DatasetError(f"{pre}field '{field}': path {rel!r} escapes the dataset root {root_r}")
    return full


def get_field(obj: Mapping[str, Any], dotted: str, where: str, kind: type | tuple[type, ...] | None = None, default: Any = ...) -> Any:
    """``obj['a']['b']`` for ``dotted='a.b'``; missing or wrongly typed -> DatasetError naming it."""
    cur: Any = obj
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(cur, Mapping):
            raise DatasetError(f"{where}: field '{'.'.join(parts[:i]) or dotted}': expected an object, got {type(cur).__name__}")
        if part not in cur or cur[part] is None:
            if default is not ...:
                return default
            raise DatasetError(f"{where}: field '{dotted}': missing")
        cur = cur[part]
    if kind is not None and not isinstance(cur, kind) or isinstance(cur, bool) and kind in (int, float, (int, float)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)  # type: ignore[union-attr]
        raise DatasetError(f"{where}: field '{dotted}': expected {names}, got {type(cur).__name__}")
    return cur


def finite_floats(value: Any, shape: tuple[int, ...], where: str, field: str) -> np.ndarray:
    """A nested list of numbers -> float64 array of ``shape``, all finite; else DatasetError."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: field '{field}': expected numbers of shape {list(shape)} ({e})") from e
    if a.shape != tuple(shape):
        raise DatasetError(f"{where}: field '{field}': expected shape {list(shape)}, got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise DatasetError(f"{where}: field '{field}': non-finite value (NaN/Inf) {a.tolist()}")
    return a


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ----------------------------------------------------------------------------- labels


def apply_labels_file(clip, path: str | Path):
    """Replace a Clip's geometry with the rows of a labels file that match its ``frame_ids``.

    Rows are matched by ``frame_ids`` (not by position), so a labels file may
    cover a window or a superset of the frames. Images are resized to the
    labels' resolution when the sizes differ.
    """
    from vidprobe.data.labels import LabelsError, LabelsFile, apply_labels

    lf = LabelsFile(path)
    ids = lf.read(keys=["frame_ids"])["frame_ids"].tolist()
    row = {int(f): i for i, f in enumerate(ids)}
    want = [int(f) for f in clip.frame_ids.tolist()]
    missing = [f for f in want if f not in row]
    if missing:
        raise LabelsError(f"{path}: field 'frame_ids': frames {missing[:8]} of the video are not in the labels file")
    labels = lf.read([row[f] for f in want])
    meta = dict(clip.meta)
    meta["labels"] = str(path)
    return apply_labels(clip, labels, meta=meta, resize_images=True)
