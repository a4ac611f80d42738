"""The cameras of a DL3DV scene, as :class:`Dl3dvFrame` lists: nerfstudio ``transforms.json`` or the COLMAP model.

``transforms.json`` (nerfstudio): ``w, h, fl_x, fl_y, cx, cy`` and distortion
(``k1, k2, k3, k4, p1, p2`` or a list ``distortion_params``) at the top level or
per frame, ``camera_model`` (``OPENCV`` ...), ``frames[i].file_path``
(``images/frame_00001.png``: the *full resolution* folder) and
``frames[i].transform_matrix``: camera->world, in the OpenGL camera convention
(x right, y up, z back), in a world that nerfstudio obtained from COLMAP's by
``applied_transform`` (a 3x4 row permutation/sign matrix):
``transform_matrix = [applied_transform; 0 0 0 1] @ c2w_gl``.

Read by nerfstudio's own rules (``nerfstudio/data/dataparsers/nerfstudio_dataparser.py``
at 50e0e3c; the tests cite the lines):

* intrinsics and size: a key present at the top level is used for every
  frame (``fx_fixed = "fl_x" in meta`` ...); per-frame values are read only
  for keys absent at the top level;
* distortion: fixed for the scene when any of ``k1, k2, k3, p1, p2,
  distortion_params`` is at the top level (``k4`` alone does not count), else
  per frame; ``distortion_params`` (6 numbers ``[k1, k2, k3, k4, p1, p2]``,
  nerfstudio's ``get_distortion_params`` order) wins over the named keys, and
  missing named keys are 0. All six go to ``clip.meta["distortion"]`` (by
  name) and ``clip.meta["distortion_params"]`` (the list);
* ``camera_model``: nerfstudio reads it from the top level only (absent:
  perspective). vidprobe does the same when it is there; when it is absent it
  checks each frame's ``camera_model`` instead and refuses non-perspective
  ones (nerfstudio would silently treat them as pinhole);
* ``applied_transform``: when the key is absent and the scene has a
  ``colmap/sparse/0`` model, nerfstudio takes the transform the older
  ``ns-process-data`` applied before it wrote the key,
  ``[[0,1,0,0],[1,0,0,0],[0,0,-1,0]]``; absent and no model: none (identity),
  and the cameras cannot be brought to the COLMAP world.

Conversions done here (exact):

* the world: with ``world="colmap"`` (default) the applied transform is undone,
  so cameras live in the COLMAP world (the one of ``points3D``); with
  ``world="transforms"`` the nerfstudio world is kept. ``clip.meta["world"]``
  says which world the cameras are in (``"transforms"`` when no transform to
  COLMAP is known) and ``clip.meta["applied_transform"]`` where the transform
  came from (``"file"``, ``"nerfstudio_colmap_default"`` or ``"none"``);
* OpenGL -> OpenCV: negate the camera's y and z axes (columns 1, 2 of the
  rotation of camera->world), then invert to world->camera;
* intrinsics: nerfstudio/COLMAP put pixel corners on integers (the centre of
  the top-left pixel is (0.5, 0.5)); scaling to the ``images_4`` resolution
  is ``c' = c * W'/W`` in that convention, and vidprobe's pixel-centre
  convention subtracts 0.5: ``c_x = cx * W'/w - 0.5``, ``f_x = fl_x * W'/w``.

Lens distortion is *not* undone: its coefficients are reported in
``clip.meta["distortion"]``. The COLMAP model files are read by
:mod:`vidprobe.data.dl3dv_colmap`; the reader is :mod:`vidprobe.data.dl3dv`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vidprobe.data.base import DatasetError
from vidprobe.data.dl3dv_colmap import PERSPECTIVE_MODELS, colmap_intrinsics, read_colmap_model
from vidprobe.data.io import finite_floats, get_field, read_json

__all__ = [
    "PIXEL_CENTER",
    "GL_TO_CV",
    "NERFSTUDIO_APPLIED_TRANSFORM",
    "NERFSTUDIO_LEGACY_TRANSFORM",
    "DIST_KEYS",
    "Dl3dvFrame",
    "read_transforms",
    "frames_from_colmap",
]

#: screen coordinate of the centre of pixel 0 (nerfstudio/COLMAP put pixel corners on integers)
PIXEL_CENTER = 0.5
#: OpenGL camera axes (x right, y up, z back) -> OpenCV (x right, y down, z forward)
GL_TO_CV = np.diag([1.0, -1.0, -1.0])
#: what nerfstudio's ``colmap_to_json`` writes as ``applied_transform`` (rows [0, 2, 1], last row negated)
NERFSTUDIO_APPLIED_TRANSFORM = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0]])
#: what nerfstudio's dataparser assumes when ``applied_transform`` is absent and ``colmap/sparse/0`` exists
NERFSTUDIO_LEGACY_TRANSFORM = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]])
DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # nerfstudio's distortion_params order
_DIST_FIXED_KEYS = ("k1", "k2", "k3", "p1", "p2", "distortion_params")  # top-level keys that fix it (no k4)


@dataclass(eq=False)
class Dl3dvFrame:
    """One frame: its image (relative to the scene), full-resolution pinhole intrinsics, world->camera."""

    name: str
    image_rel: str
    full_wh: tuple[float, float]
    fx: float
    fy: float
    cx: float  # pixel-corner convention, full resolution
    cy: float
    extrinsics: np.ndarray  # [3,4] OpenCV world->camera
    camera_model: str
    distortion: dict[str, float] = field(default_factory=dict)
    where: str = ""
    world: str = "colmap"  # the world of ``extrinsics``: "colmap" or "transforms"
    applied_transform: str = "file"  # where the undone transform came from: file | nerfstudio_colmap_default | none


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _to_image_dir(file_path: str, image_dir: str) -> str:
    parts = Path(file_path).parts
    if parts and parts[0] == ".":
        parts = parts[1:]
    if len(parts) >= 2 and parts[0].startswith("images"):
        return str(Path(image_dir, *parts[1:]))
    return str(Path(*parts)) if parts else file_path


def _c2w_gl_to_w2c_cv(c2w: np.ndarray) -> np.ndarray:
    R = c2w[:3, :3] @ GL_TO_CV
    t = c2w[:3, 3]
    return np.concatenate([R.T, (-R.T @ t)[:, None]], 1)


def _number(v: Any, where: str, fld: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise DatasetError(f"{where}: field '{fld}': expected a finite number, got {v!r}")
    return float(v)


def _distortion(obj: Mapping[str, Any], where: str, prefix: str) -> dict[str, float]:
    """``{k1, k2, k3, k4, p1, p2}`` of one scope: ``distortion_params`` if present, else the named keys (0 if absent)."""
    if "distortion_params" in obj:
        vals = finite_floats(obj["distortion_params"], (6,), where, f"{prefix}distortion_params")
        return dict(zip(DIST_KEYS, (float(v) for v in vals)))
    return {k: _number(obj[k], where, f"{prefix}{k}") if k in obj else 0.0 for k in DIST_KEYS}


def _applied_transform(data: Mapping[str, Any], path: Path, where: str) -> tuple[np.ndarray, str]:
    """The 4x4 ``applied_transform`` nerfstudio would use, and where it came from."""
    A = np.eye(4)
    if "applied_transform" in data:
        A[:3] = finite_floats(data["applied_transform"], (3, 4), where, "applied_transform")
        if abs(np.linalg.det(A)) < 1e-9:
            raise DatasetError(f"{where}: field 'applied_transform': not invertible")
        return A, "file"
    if (path.parent / "colmap" / "sparse" / "0").exists():
        A[:3] = NERFSTUDIO_LEGACY_TRANSFORM
        return A, "nerfstudio_colmap_default"
    return A, "none"


def read_transforms(path: str | Path, image_dir: str = "images_4", world: str = "colmap") -> list[Dl3dvFrame]:
    """Parse a nerfstudio ``transforms.json`` into frames sorted by file name (see the module docstring)."""
    path = Path(path)
    if world not in ("colmap", "transforms"):
        raise ValueError(f"world must be 'colmap' or 'transforms', got {world!r}")
    data = read_json(path)
    where = str(path)
    if not isinstance(data, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(data).__name__}")
    frames = get_field(data, "frames", where, list)
    if not frames:
        raise DatasetError(f"{where}: field 'frames': empty")
    A, source = _applied_transform(data, path, where)
    to_colmap = world == "colmap" and source != "none"
    A_inv = np.linalg.inv(A) if to_colmap else np.eye(4)
    frame_world = "colmap" if to_colmap else "transforms"
    model = data.get("camera_model")
    scene_dist = _distortion(data, where, "") if any(k in data for k in _DIST_FIXED_KEYS) else None
    out = []
    for i, fr in enumerate(frames):
        fw = f"{where}: frames[{i}]"
        if not isinstance(fr, Mapping):
            raise DatasetError(f"{fw}: expected an object, got {type(fr).__name__}")

        def par(key: str) -> float:
            # nerfstudio: a top-level key fixes the value for every frame; per frame only when absent there
            if key in data:
                return _number(data[key], where, key)
            if key in fr:
                return _number(fr[key], where, f"frames[{i}].{key}")
            raise DatasetError(f"{where}: field '{key}' / 'frames[{i}].{key}': missing")

        cam = model if model is not None else fr.get("camera_model", "OPENCV")
        if cam not in PERSPECTIVE_MODELS:
            fld = "camera_model" if model is not None else f"frames[{i}].camera_model"
            raise DatasetError(f"{where}: field '{fld}': unsupported camera model {cam!r} (supported: {list(PERSPECTIVE_MODELS)})")
        fp = get_field(fr, "file_path", fw, str)
        fx, fy = par("fl_x"), par("fl_y")
        cx, cy = par("cx"), par("cy")
        w, h = par("w"), par("h")
        if fx <= 0 or fy <= 0 or w <= 0 or h <= 0:
            raise DatasetError(f"{fw}: field 'fl_x/fl_y/w/h': must be positive, got {(fx, fy, w, h)}")
        dist = dict(scene_dist) if scene_dist is not None else _distortion(fr, where, f"frames[{i}].")
        c2w = np.eye(4)
        tm = get_field(fr, "transform_matrix", fw, list)
        M = finite_floats(tm, (4, 4) if len(tm) == 4 else (3, 4), where, f"frames[{i}].transform_matrix")
        c2w[:3] = M[:3]
        c2w = A_inv @ c2w
        R = c2w[:3, :3]
        err = np.abs(R @ R.T - np.eye(3)).max()
        if err > 1e-3 or np.linalg.det(R) < 0:
            raise DatasetError(f"{where}: field 'frames[{i}].transform_matrix': rotation is not orthonormal with det +1 "
                               f"(max |R R^T - I| = {err:.3g})")
        out.append(Dl3dvFrame(name=Path(fp).name, image_rel=_to_image_dir(fp, image_dir), full_wh=(w, h), fx=fx, fy=fy,
                              cx=cx, cy=cy, extrinsics=_c2w_gl_to_w2c_cv(c2w), camera_model=cam, distortion=dist, where=fw,
                              world=frame_world, applied_transform=source))
    out.sort(key=lambda f: _natural_key(f.name))
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise DatasetError(f"{where}: field 'frames[].file_path': duplicate frame names")
    return out


def frames_from_colmap(scene_dir: Path, image_dir: str) -> list[Dl3dvFrame]:
    mdir = scene_dir / "colmap" / "sparse" / "0"
    cams, imgs = read_colmap_model(mdir)
    out = []
    for im in imgs.values():
        cam = cams[im.camera_id]
        fx, fy, cx, cy, dist = colmap_intrinsics(cam, f"{mdir}: camera {cam.camera_id}")
        out.append(Dl3dvFrame(name=Path(im.name).name, image_rel=str(Path(image_dir, Path(im.name).name)),
                              full_wh=(float(cam.width), float(cam.height)), fx=fx, fy=fy, cx=cx, cy=cy,
                              extrinsics=im.extrinsics(), camera_model=cam.model, distortion=dist,
                              where=f"{mdir}: image {im.name!r}"))
    out.sort(key=lambda f: _natural_key(f.name))
    return out
