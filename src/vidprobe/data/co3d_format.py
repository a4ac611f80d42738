"""The CO3Dv2 on-disk format: layout, frame annotations and the PyTorch3D NDC cameras.

Layout (the official one; every path inside the annotations is relative to
the dataset root, i.e. the folder that holds the category folders)::

    <root>/<category>/frame_annotations.jgz     gzipped JSON list of frame annotations
    <root>/<category>/sequence_annotations.jgz  gzipped JSON list of sequence annotations
    <root>/<category>/set_lists/set_lists_<subset>.json   {"train"|"val"|"test": [[seq, frame, path], ...]}
    <root>/<category>/<sequence>/images/frameXXXXXX.jpg
    <root>/<category>/<sequence>/depths/frameXXXXXX.jpg.geometric.png   float16 bits in a 16-bit PNG
    <root>/<category>/<sequence>/depth_masks/frameXXXXXX.png            1-bit mask
    <root>/<category>/<sequence>/masks/frameXXXXXX.png                  P(foreground) * 255

A frame annotation has ``sequence_name``, ``frame_number``, ``frame_timestamp``,
``image {path, size [H, W]}``, ``depth {path, scale_adjustment, mask_path}``,
``mask {path, mass}`` and ``viewpoint {R, T, focal_length, principal_point,
intrinsics_format}``; :func:`parse_frame_annotation` checks them into a
:class:`Co3dFrame`. Depth in metres-ish units is ``float16(png) * scale_adjustment``.

Cameras (PyTorch3D convention, converted here and nowhere else):

* ``X_cam = X_world @ R + T`` (row vectors), camera axes +X left, +Y up, +Z forward;
* NDC: ``x_ndc = f_x X/Z + p_x``, ``y_ndc = f_y Y/Z + p_y``. With
  ``ndc_isotropic`` both axes are scaled by ``s = min(H, W) / 2``; with the
  legacy ``ndc_norm_image_bounds`` x by ``W/2`` and y by ``H/2``;
* screen coordinates put ``(0, 0)`` at the top-left *corner* of the top-left
  pixel: ``u_screen = W/2 - x_ndc s_x``, ``v_screen = H/2 - y_ndc s_y``.

vidprobe's pixel ``(u, v)`` is the *centre* of column u / row v, i.e.
``u = u_screen - 0.5``. Hence, exactly::

    f_x' = f_x s_x,  f_y' = f_y s_y,  c_x = W/2 - p_x s_x - 0.5,  c_y = H/2 - p_y s_y - 0.5
    R_cv = diag(-1,-1,1) R^T,   t_cv = diag(-1,-1,1) T       (x_cam = R_cv x_world + t_cv)

The reader is :mod:`vidprobe.data.co3d`, the writer :mod:`vidprobe.data.co3d_write`,
the reference preprocessing :mod:`vidprobe.data.co3d_prepare`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from vidprobe.data.base import DatasetError
from vidprobe.data.io import finite_floats, get_field

__all__ = [
    "FRAME_ANNOTATIONS",
    "SEQUENCE_ANNOTATIONS",
    "INTRINSICS_FORMATS",
    "PIXEL_CENTER",
    "Co3dFrame",
    "ndc_to_opencv",
    "opencv_to_ndc",
    "parse_frame_annotation",
]

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
_FLIP = np.diag([-1.0, -1.0, 1.0])
#: screen coordinate of the centre of pixel 0 (PyTorch3D/COLMAP put pixel corners on integers)
PIXEL_CENTER = 0.5


# ----------------------------------------------------------------------------- cameras


def _ndc_scale(image_hw: tuple[int, int], intrinsics_format: str) -> tuple[float, float]:
    H, W = image_hw
    if intrinsics_format == "ndc_isotropic":
        s = min(H, W) / 2.0
        return s, s
    if intrinsics_format == "ndc_norm_image_bounds":
        return W / 2.0, H / 2.0
    raise DatasetError(f"field 'viewpoint.intrinsics_format': unknown format {intrinsics_format!r} (known: {INTRINSICS_FORMATS})")


def ndc_to_opencv(
    R: Any, T: Any, focal_length: Any, principal_point: Any, image_hw: tuple[int, int], intrinsics_format: str = "ndc_isotropic"
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch3D NDC camera -> OpenCV ``K [3,3]`` (pixels, centre convention) and ``E [3,4]`` world->camera.

    See the module docstring for the formulas. Returns float64 arrays.
    """
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    f = np.asarray(focal_length, dtype=np.float64)
    p = np.asarray(principal_point, dtype=np.float64)
    H, W = image_hw
    sx, sy = _ndc_scale(image_hw, intrinsics_format)
    K = np.array(
        [
            [f[0] * sx, 0.0, W / 2.0 - p[0] * sx - PIXEL_CENTER],
            [0.0, f[1] * sy, H / 2.0 - p[1] * sy - PIXEL_CENTER],
            [0.0, 0.0, 1.0],
        ]
    )
    E = np.concatenate([_FLIP @ R.T, (_FLIP @ T)[:, None]], axis=1)
    return K, E


def opencv_to_ndc(K: Any, E: Any, image_hw: tuple[int, int], intrinsics_format: str = "ndc_isotropic") -> dict[str, list]:
    """Exact inverse of :func:`ndc_to_opencv`: returns ``R, T, focal_length, principal_point`` (lists)."""
    K = np.asarray(K, dtype=np.float64)
    E = np.asarray(E, dtype=np.float64)
    if abs(K[0, 1]) > 1e-9:
        raise ValueError(f"intrinsics with skew {K[0, 1]} cannot be expressed in PyTorch3D NDC")
    H, W = image_hw
    sx, sy = _ndc_scale(image_hw, intrinsics_format)
    R = (_FLIP @ E[:, :3]).T
    T = _FLIP @ E[:, 3]
    f = [K[0, 0] / sx, K[1, 1] / sy]
    p = [(W / 2.0 - K[0, 2] - PIXEL_CENTER) / sx, (H / 2.0 - K[1, 2] - PIXEL_CENTER) / sy]
    return {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": f,
        "principal_point": p,
        "intrinsics_format": intrinsics_format,
    }


# ----------------------------------------------------------------------------- annotations


@dataclass(eq=False)
class Co3dFrame:
    """One parsed, validated frame annotation (paths relative to the dataset root)."""

    sequence: str
    frame_number: int
    timestamp: float | None
    image_path: str
    image_hw: tuple[int, int]  # (H, W)
    depth_path: str | None
    depth_scale: float  # depth.scale_adjustment
    depth_mask_path: str | None
    mask_path: str | None
    R: np.ndarray  # [3,3] float64, PyTorch3D (X_cam = X_world @ R + T)
    T: np.ndarray  # [3]
    focal_length: np.ndarray  # [2] NDC
    principal_point: np.ndarray  # [2] NDC
    intrinsics_format: str  # one of INTRINSICS_FORMATS
    where: str  # "<annotation file>: entry i (sequence ..., frame ...)", the prefix of every error
    raw: dict = field(repr=False, default_factory=dict)  # the annotation as read

    def opencv(self) -> tuple[np.ndarray, np.ndarray]:
        return ndc_to_opencv(self.R, self.T, self.focal_length, self.principal_point, self.image_hw, self.intrinsics_format)


def parse_frame_annotation(entry: Any, where: str) -> Co3dFrame:
    """Validate one frame annotation dict; errors name ``where`` and the field."""
    if not isinstance(entry, Mapping):
        raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
    seq = get_field(entry, "sequence_name", where, str)
    fn = get_field(entry, "frame_number", where, int)
    where = f"{where} (sequence {seq!r}, frame {fn})"
    ts = entry.get("frame_timestamp")
    if ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts)):
        raise DatasetError(f"{where}: field 'frame_timestamp': expected a finite number, got {ts!r}")
    img_path = get_field(entry, "image.path", where, str)
    size = finite_floats(get_field(entry, "image.size", where, (list, tuple)), (2,), where, "image.size")
    if (size <= 0).any() or (size != np.round(size)).any():
        raise DatasetError(f"{where}: field 'image.size': expected two positive integers [H, W], got {size.tolist()}")
    hw = (int(size[0]), int(size[1]))
    depth = entry.get("depth")
    depth_path = mask_path_d = None
    scale = 1.0
    if depth is not None:
        if not isinstance(depth, Mapping):
            raise DatasetError(f"{where}: field 'depth': expected an object, got {type(depth).__name__}")
        depth_path = get_field(entry, "depth.path", where, str)
        scale = get_field(entry, "depth.scale_adjustment", where, (int, float))
        if not math.isfinite(scale) or scale <= 0:
            raise DatasetError(f"{where}: field 'depth.scale_adjustment': expected a positive finite number, got {scale!r}")
        mask_path_d = get_field(entry, "depth.mask_path", where, str, default=None)
    mask = entry.get("mask")
    mask_path = None
    if mask is not None:
        mask_path = get_field(entry, "mask.path", where, str)
    get_field(entry, "viewpoint", where, Mapping)
    R = finite_floats(get_field(entry, "viewpoint.R", where, (list, tuple)), (3, 3), where, "viewpoint.R")
    T = finite_floats(get_field(entry, "viewpoint.T", where, (list, tuple)), (3,), where, "viewpoint.T")
    f = finite_floats(get_field(entry, "viewpoint.focal_length", where, (list, tuple)), (2,), where, "viewpoint.focal_length")
    p = finite_floats(get_field(entry, "viewpoint.principal_point", where, (list, tuple)), (2,), where, "viewpoint.principal_point")
    fmt = get_field(entry, "viewpoint.intrinsics_format", where, str, default="ndc_norm_image_bounds")
    if fmt not in INTRINSICS_FORMATS:
        raise DatasetError(f"{where}: field 'viewpoint.intrinsics_format': unknown format {fmt!r} (known: {list(INTRINSICS_FORMATS)})")
    if (f <= 0).any():
        raise DatasetError(f"{where}: field 'viewpoint.focal_length': must be positive, got {f.tolist()}")
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(R) < 0:
        raise DatasetError(f"{where}: field 'viewpoint.R': not a rotation (max |R R^T - I| = {err:.3g}, det = {np.linalg.det(R):.3g})")
    return Co3dFrame(
        sequence=seq, frame_number=int(fn), timestamp=None if ts is None else float(ts), image_path=img_path, image_hw=hw,
        depth_path=depth_path, depth_scale=float(scale), depth_mask_path=mask_path_d, mask_path=mask_path,
        R=R, T=T, focal_length=f, principal_point=p, intrinsics_format=fmt, where=where, raw=dict(entry),
    )
