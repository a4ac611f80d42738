"""Per-video ground-truth labels file (safetensors), readable frame by frame.

One file per video holds, for every frame ``T`` of the video:

=============  ============  =======  ==========================================
key            shape         dtype    meaning
=============  ============  =======  ==========================================
points         [T,H,W,3]     float    world points
depth          [T,H,W]       float    z in the camera frame (0 = unknown)
confidence     [T,H,W]       float    per-pixel confidence (VGGT: >= 1; exact: 1)
valid          [T,H,W]       uint8    0/1 mask (bool stored as uint8)
intrinsics     [T,3,3]       float    pixels, OpenCV
extrinsics     [T,3,4]       float    world->camera, OpenCV
frame_ids      [T]           int64    index of each row in the source video
=============  ============  =======  ==========================================

The safetensors metadata (a string dict) carries ``format`` (``vidprobe-labels``),
``version``, ``height``, ``width``, ``num_frames`` and whatever the writer adds
(``source``, ``labeler`` ...; non-string values are stored as JSON).

This is the form the reference stores its VGGT pseudo-labels in: any dataset
(CO3D, DL3DV, synthetic) can take its ground truth from such a file.
:class:`LabelsFile` reads only the frames it is asked for through
``safe_open(...).get_slice``; it never loads the whole file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidprobe.atomic import atomic_path  # noqa: F401  (re-exported)
from vidprobe.data.base import DatasetError
from vidprobe.data.clip import Clip

__all__ = [
    "LABELS_FORMAT",
    "LABELS_VERSION",
    "LABEL_KEYS",
    "LabelsError",
    "LabelsFile",
    "write_labels",
    "write_labels_from_clip",
    "apply_labels",
    "atomic_path",
]

LABELS_FORMAT = "vidprobe-labels"
LABELS_VERSION = 1
LABEL_KEYS = ("points", "depth", "confidence", "valid", "intrinsics", "extrinsics", "frame_ids")
_FLOAT_KEYS = ("points", "depth", "confidence", "intrinsics", "extrinsics")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}
_ROT_TOL = 1e-3


class LabelsError(DatasetError):
    """A labels file (or the arrays given to the writer) is malformed; names file and field."""


def _shapes(T: int, H: int, W: int) -> dict[str, tuple[int, ...]]:
    return {
        "points": (T, H, W, 3),
        "depth": (T, H, W),
        "confidence": (T, H, W),
        "valid": (T, H, W),
        "intrinsics": (T, 3, 3),
        "extrinsics": (T, 3, 4),
        "frame_ids": (T,),
    }


def _check_values(where: str, tensors: Mapping[str, torch.Tensor], frame_offset: Sequence[int] | None = None) -> None:
    """Finite floats, 0/1 valid, positive focal lengths, orthonormal rotations."""

    def frame_of(i: int) -> int:
        return int(frame_offset[i]) if frame_offset is not None else i

    for key in _FLOAT_KEYS:
        t = tensors[key]
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise LabelsError(f"{where}: field '{key}': non-finite value (NaN/Inf) in frame {frame_of(bad[0])} at index {bad[1:]}")
    v = tensors["valid"]
    if ((v != 0) & (v != 1)).any():
        raise LabelsError(f"{where}: field 'valid': values must be 0 or 1")
    if (tensors["depth"] < 0).any():
        bad = int((tensors["depth"] < 0).flatten(1).any(1).nonzero()[0])
        raise LabelsError(f"{where}: field 'depth': negative depth in frame {frame_of(bad)}")
    K = tensors["intrinsics"]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)
    if (f <= 0).any():
        bad = int((f <= 0).any(-1).nonzero()[0])
        raise LabelsError(f"{where}: field 'intrinsics': focal lengths must be positive (frame {frame_of(bad)})")
    R = tensors["extrinsics"][:, :3, :3].double()
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    err = (R @ R.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2)) if len(R) else torch.zeros(0)
    det = torch.linalg.det(R) if len(R) else torch.zeros(0)
    badm = (err > _ROT_TOL) | (det < 0)
    if badm.any():
        bad = int(badm.nonzero()[0])
        raise LabelsError(
            f"{where}: field 'extrinsics': rotation of frame {frame_of(bad)} is not orthonormal with det +1 "
            f"(max |R R^T - I| = {float(err[bad]):.3g}, det = {float(det[bad]):.3g})"
        )




def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _meta_str(meta: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def write_labels(
    path: str | Path,
    *,
    points: torch.Tensor,
    depth: torch.Tensor,
    confidence: torch.Tensor,
    valid: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    frame_ids: torch.Tensor,
    meta: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Validate and atomically write one video's labels (see the module docstring).

    ``meta`` values that are not strings are stored as JSON. Float arrays are
    stored as ``dtype`` (float32 by default). Returns the path written.
    """
    path = Path(path)
    where = str(path)
    given = dict(points=points, depth=depth, confidence=confidence, valid=valid,
                 intrinsics=intrinsics, extrinsics=extrinsics, frame_ids=frame_ids)
    for k, t in given.items():
        if not isinstance(t, torch.Tensor):
            raise LabelsError(f"{where}: field '{k}': expected a torch.Tensor, got {type(t).__name__}")
    if depth.dim() != 3:
        raise LabelsError(f"{where}: field 'depth': expected shape [T,H,W], got {tuple(depth.shape)}")
    T, H, W = depth.shape
    for k, shape in _shapes(T, H, W).items():
        if tuple(given[k].shape) != shape:
            raise LabelsError(f"{where}: field '{k}': expected shape {list(shape)}, got {list(given[k].shape)}")
    if torch.is_floating_point(frame_ids) or frame_ids.dtype == torch.bool:
        raise LabelsError(f"{where}: field 'frame_ids': expected an integer dtype, got {frame_ids.dtype}")
    for k in _FLOAT_KEYS:
        if not torch.is_floating_point(given[k]):
            raise LabelsError(f"{where}: field '{k}': expected a floating point dtype, got {given[k].dtype}")
    out = {k: given[k].detach().cpu().to(dtype).contiguous() for k in _FLOAT_KEYS}
    out["valid"] = valid.detach().cpu().to(torch.uint8).contiguous()
    out["frame_ids"] = frame_ids.detach().cpu().to(torch.int64).contiguous()
    _check_values(where, out)
    md = _meta_str(meta or {})
    md.update(format=LABELS_FORMAT, version=str(LABELS_VERSION), height=str(H), width=str(W), num_frames=str(T))
    _atomic_save(out, path, md)
    return path


def write_labels_from_clip(path: str | Path, clip: Clip, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a Clip's ground truth (points derived from depth when absent; confidence 1 when absent)."""
    m: dict[str, Any] = {}
    for k in ("dataset", "sequence", "category", "source", "labeler"):
        if k in clip.meta:
            m[k] = clip.meta[k]
    m.update(meta or {})
    conf = clip.confidence if clip.confidence is not None else torch.ones_like(clip.depth)
    return write_labels(
        path,
        points=clip.world_points(),
        depth=clip.depth,
        confidence=conf,
        valid=clip.valid,
        intrinsics=clip.intrinsics,
        extrinsics=clip.extrinsics,
        frame_ids=clip.frame_ids,
        meta=m,
    )


def _runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted unique frames -> contiguous ``[start, stop)`` runs."""
    runs: list[tuple[int, int]] = []
    for f in frames:
        if runs and runs[-1][1] == f:
            runs[-1] = (runs[-1][0], f + 1)
        else:
            runs.append((f, f + 1))
    return runs


class LabelsFile:
    """Read access to one labels file; the header is checked on open, values on read.

    ``read(frames)`` returns only the requested frames (in the requested order,
    repetitions allowed), reading them slice by slice from disk.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise LabelsError(f"{where}: labels file not found")
        if self.path.stat().st_size == 0:
            raise LabelsError(f"{where}: labels file is empty")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                keys = set(f.keys())
                meta = dict(f.metadata() or {})
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
                dtypes = {k: f.get_slice(k).get_dtype() for k in keys}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise LabelsError(f"{where}: not a readable safetensors file (truncated or corrupt?): {e}") from e
        missing = [k for k in LABEL_KEYS if k not in keys]
        if missing:
            raise LabelsError(f"{where}: field '{missing[0]}': missing from labels file (has {sorted(keys)})")
        fmt = meta.get("format")
        if fmt is not None and fmt != LABELS_FORMAT:
            raise LabelsError(f"{where}: metadata 'format': expected {LABELS_FORMAT!r}, got {fmt!r}")
        ver = meta.get("version")
        if ver is not None and ver != str(LABELS_VERSION):
            raise LabelsError(f"{where}: metadata 'version': unsupported labels version {ver!r} (reader knows {LABELS_VERSION})")
        if len(shapes["depth"]) != 3:
            raise LabelsError(f"{where}: field 'depth': expected shape [T,H,W], got {list(shapes['depth'])}")
        T, H, W = shapes["depth"]
        for k, shape in _shapes(T, H, W).items():
            if shapes[k] != shape:
                raise LabelsError(f"{where}: field '{k}': expected shape {list(shape)}, got {list(shapes[k])}")
        for k in _FLOAT_KEYS:
            if dtypes[k] not in _FLOAT_DTYPES:
                raise LabelsError(f"{where}: field '{k}': expected a float dtype, got {dtypes[k]}")
        for k in ("valid", "frame_ids"):
            if dtypes[k] not in _INT_DTYPES | {"BOOL"}:
                raise LabelsError(f"{where}: field '{k}': expected an integer dtype, got {dtypes[k]}")
        for k, val in (("height", H), ("width", W), ("num_frames", T)):
            if k in meta and meta[k] != str(val):
                raise LabelsError(f"{where}: metadata '{k}': says {meta[k]}, arrays have {val}")
        self._T, self._H, self._W = T, H, W
        self.meta: dict[str, str] = meta

    @property
    def num_frames(self) -> int:
        return self._T

    @property
    def hw(self) -> tuple[int, int]:
        return (self._H, self._W)

    def __repr__(self) -> str:
        return f"LabelsFile({str(self.path)!r}, frames={self._T}, hw={self.hw})"

    def read(self, frames: Sequence[int] | None = None, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The labels of ``frames`` (positions in the file; all when ``None``) as tensors.

        ``valid`` comes back as bool, float arrays as stored, ``frame_ids`` as int64.
        ``keys`` restricts which arrays are returned (values are still checked
        for the arrays read).
        """
        where = str(self.path)
        if frames is None:
            order = list(range(self._T))
        else:
            order = [int(i) for i in frames]
        for i in order:
            if not -self._T <= i < self._T:
                raise LabelsError(f"{where}: frame {i} out of range (file has {self._T} frames)")
        order = [i % self._T if self._T else i for i in order]
        keys = list(LABEL_KEYS if keys is None else keys)
        for k in keys:
            if k not in LABEL_KEYS:
                raise LabelsError(f"{where}: unknown labels field {k!r} (known: {list(LABEL_KEYS)})")
        uniq = sorted(set(order))
        pos = {f: j for j, f in enumerate(uniq)}
        take = torch.tensor([pos[i] for i in order], dtype=torch.long)
        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(self.path), framework="pt") as f:
                for k in keys:
                    sl = f.get_slice(k)
                    parts = [sl[a:b] for a, b in _runs(uniq)]
                    t = torch.cat(parts) if parts else torch.empty((0, *_shapes(0, self._H, self._W)[k][1:]))
                    out[k] = t[take]
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise LabelsError(f"{where}: could not read frames {order}: {e}") from e
        if "frame_ids" in out:
            out["frame_ids"] = out["frame_ids"].to(torch.int64)
        if set(LABEL_KEYS) <= set(out):
            _check_values(where, out, frame_offset=order)
        else:
            # partial key set: check what we can
            for k in _FLOAT_KEYS:
                if k in out and not torch.isfinite(out[k]).all():
                    bad = (~torch.isfinite(out[k])).nonzero()[0].tolist()
                    raise LabelsError(f"{where}: field '{k}': non-finite value (NaN/Inf) in frame {order[bad[0]]}")
        if "valid" in out:
            out["valid"] = out["valid"] != 0
        return out

    def validate(self) -> None:
        """Read and check every frame, one at a time (bounded memory)."""
        for i in range(self._T):
            self.read([i])


def apply_labels(
    clip_or_images: Clip | torch.Tensor,
    labels: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
    resize_images: bool = False,
) -> Clip:
    """Build a Clip from images that came from elsewhere and a labels dict (``LabelsFile.read``).

    ``clip_or_images`` is a Clip (its images and meta are kept; its geometry is
    replaced) or an image tensor ``[T,3,H,W]``. The labels' frame count must match,
    and so must the image size unless ``resize_images`` (bilinear resize of the
    images to the labels' size). When a Clip is given, its ``frame_ids`` must
    equal the labels'.
    """
    src = (meta or {}).get("source") or (clip_or_images.meta.get("source") if isinstance(clip_or_images, Clip) else None)
    where = f"{src}: " if src else ""
    missing = [k for k in ("depth", "valid", "intrinsics", "extrinsics", "frame_ids") if k not in labels]
    if missing:
        raise LabelsError(f"{where}labels field '{missing[0]}': missing")
    if isinstance(clip_or_images, Clip):
        images = clip_or_images.images
        m = dict(clip_or_images.meta)
        if not torch.equal(clip_or_images.frame_ids.to(torch.int64), labels["frame_ids"].to(torch.int64)):
            raise LabelsError(
                f"{where}field 'frame_ids': clip frames {clip_or_images.frame_ids.tolist()} "
                f"!= labels frames {labels['frame_ids'].tolist()}"
            )
    else:
        images = clip_or_images
        m = {}
    m.update(meta or {})
    T, H, W = labels["depth"].shape
    if images.dim() != 4 or images.shape[0] != T:
        raise LabelsError(f"{where}field 'images': expected {T} frames [T,3,H,W] to match the labels, got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (H, W):
        if not resize_images:
            raise LabelsError(
                f"{where}field 'images': size {tuple(images.shape[-2:])} != labels size {(H, W)} (pass resize_images=True)"
            )
        images = torch.nn.functional.interpolate(images.float(), size=(H, W), mode="bilinear", align_corners=False,
                                                 antialias=True).clamp(0, 1)
    conf = labels.get("confidence")
    return Clip(
        images=images,
        depth=labels["depth"].float(),
        valid=labels["valid"].bool(),
        intrinsics=labels["intrinsics"].float(),
        extrinsics=labels["extrinsics"].float(),
        frame_ids=labels["frame_ids"].long(),
        confidence=None if conf is None else conf.float(),
        points=None if labels.get("points") is None else labels["points"].float(),
        meta=m,
    )
