"""DL3DV-10K reader (nerfstudio ``transforms.json`` / COLMAP), and a writer for tests.

Layout (DL3DV-ALL-960P; scene folders may sit one level down, e.g. ``1K/<hash>``)::

    <root>/<scene>/images_4/frame_00001.png ...      960x540 frames (what we read)
    <root>/<scene>/transforms.json                   nerfstudio cameras (full resolution)
    <root>/<scene>/colmap/sparse/0/{cameras,images,points3D}.{bin,txt}   optional

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
``clip.meta["distortion"]``. Depth is absent from DL3DV: without a labels file
a clip has depth 0 and ``valid`` False; with ``labels_dir`` the geometry comes
from ``<labels_dir>/<scene id>.safetensors``.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import roma
import torch

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset, split_videos
from vidprobe.data.clip import Clip
from vidprobe.data.io import (
    apply_labels_file,
    atomic_write_bytes,
    atomic_write_json,
    finite_floats,
    get_field,
    image_size,
    read_json,
    read_rgb,
    safe_join,
    save_image,
)

__all__ = [
    "ColmapCamera",
    "ColmapImage",
    "read_colmap_model",
    "write_colmap_model",
    "colmap_intrinsics",
    "read_transforms",
    "Dl3dvFrame",
    "Dl3dvDataset",
    "write_dl3dv",
    "NERFSTUDIO_APPLIED_TRANSFORM",
    "NERFSTUDIO_LEGACY_TRANSFORM",
]

PIXEL_CENTER = 0.5
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])
#: what nerfstudio's ``colmap_to_json`` writes as ``applied_transform`` (rows [0, 2, 1], last row negated)
NERFSTUDIO_APPLIED_TRANSFORM = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0]])
#: what nerfstudio's dataparser assumes when ``applied_transform`` is absent and ``colmap/sparse/0`` exists
NERFSTUDIO_LEGACY_TRANSFORM = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]])

# COLMAP camera models: id -> (name, number of params)
COLMAP_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_MODEL_IDS = {name: i for i, (name, _) in COLMAP_MODELS.items()}
#: perspective models we accept (the distortion terms go to meta, the pinhole part is used)
PERSPECTIVE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
_DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # nerfstudio's distortion_params order
_DIST_FIXED_KEYS = ("k1", "k2", "k3", "p1", "p2", "distortion_params")  # top-level keys that fix it (no k4)


# ----------------------------------------------------------------------------- COLMAP


@dataclass
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: list[float]


@dataclass
class ColmapImage:
    image_id: int
    qvec: list[float]  # w, x, y, z (world->camera rotation)
    tvec: list[float]
    camera_id: int
    name: str

    def extrinsics(self) -> np.ndarray:
        """World->camera ``[3,4]`` (COLMAP cameras are already OpenCV)."""
        w, x, y, z = self.qvec
        q = torch.tensor([x, y, z, w], dtype=torch.float64)
        R = roma.unitquat_to_rotmat(q / q.norm()).numpy()
        return np.concatenate([R, np.asarray(self.tvec, dtype=np.float64)[:, None]], 1)


def colmap_intrinsics(cam: ColmapCamera, where: str) -> tuple[float, float, float, float, dict[str, float]]:
    """``(fx, fy, cx, cy, distortion)`` of a perspective COLMAP camera (pixel-corner convention)."""
    p = cam.params
    m = cam.model
    if m == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], {}
    if m == "PINHOLE":
        return p[0], p[1], p[2], p[3], {}
    if m == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], {"k1": p[3]}
    if m == "RADIAL":
        return p[0], p[0], p[1], p[2], {"k1": p[3], "k2": p[4]}
    if m == "OPENCV":
        return p[0], p[1], p[2], p[3], dict(zip(("k1", "k2", "p1", "p2"), p[4:8]))
    if m == "FULL_OPENCV":
        return p[0], p[1], p[2], p[3], dict(zip(("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"), p[4:12]))
    raise DatasetError(f"{where}: field 'model': unsupported camera model {m!r} (supported: {list(PERSPECTIVE_MODELS)})")


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        el = line.split()
        where = f"{path}: line {ln}"
        try:
            cid, model, w, h = int(el[0]), el[1], int(el[2]), int(el[3])
            params = [float(x) for x in el[4:]]
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...' ({e})") from e
        if model not in _MODEL_IDS:
            raise DatasetError(f"{where}: field 'model': unknown COLMAP camera model {model!r}")
        if len(params) != COLMAP_MODELS[_MODEL_IDS[model]][1]:
            raise DatasetError(f"{where}: field 'params': {model} needs {COLMAP_MODELS[_MODEL_IDS[model]][1]} params, got {len(params)}")
        cams[cid] = ColmapCamera(cid, model, w, h, params)
    return cams


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    lines = path.read_text().splitlines()
    imgs = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        el = line.split()
        where = f"{path}: line {i}"
        try:
            iid = int(el[0])
            q = [float(x) for x in el[1:5]]
            t = [float(x) for x in el[5:8]]
            cid = int(el[8])
            name = " ".join(el[9:])
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' ({e})") from e
        if not name:
            raise DatasetError(f"{where}: field 'NAME': missing")
        imgs[iid] = ColmapImage(iid, q, t, cid, name)
        i += 1  # the POINTS2D line (possibly empty)
    return imgs


def _unpack(fmt: str, buf: bytes, off: int, path: Path, what: str):
    size = struct.calcsize(fmt)
    if off + size > len(buf):
        raise DatasetError(f"{path}: field '{what}': file truncated at byte {off}")
    return struct.unpack_from(fmt, buf, off), off + size


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    buf = path.read_bytes()
    (n,), off = _unpack("<Q", buf, 0, path, "num_cameras")
    cams = {}
    for _ in range(n):
        (cid, mid, w, h), off = _unpack("<iiQQ", buf, off, path, "camera")
        if mid not in COLMAP_MODELS:
            raise DatasetError(f"{path}: field 'model_id': unknown COLMAP camera model id {mid} (camera {cid})")
        name, npar = COLMAP_MODELS[mid]
        params, off = _unpack(f"<{npar}d", buf, off, path, "params")
        cams[cid] = ColmapCamera(cid, name, int(w), int(h), list(params))
    return cams


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    buf = path.read_bytes()
    (n,), off = _unpack("<Q", buf, 0, path, "num_images")
    imgs = {}
    for _ in range(n):
        vals, off = _unpack("<I7di", buf, off, path, "image")
        end = buf.find(b"\x00", off)
        if end < 0:
            raise DatasetError(f"{path}: field 'name': unterminated image name at byte {off}")
        name = buf[off:end].decode("utf8", errors="replace")
        off = end + 1
        (npts,), off = _unpack("<Q", buf, off, path, "num_points2D")
        off += 24 * npts
        if off > len(buf):
            raise DatasetError(f"{path}: field 'points2D': file truncated")
        imgs[vals[0]] = ColmapImage(vals[0], list(vals[1:5]), list(vals[5:8]), vals[8], name)
    return imgs


def read_colmap_model(model_dir: str | Path) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage]]:
    """Cameras and images of a COLMAP sparse model (``.bin`` preferred, else ``.txt``)."""
    d = Path(model_dir)
    out = []
    for stem, rb, rt in (("cameras", _read_cameras_bin, _read_cameras_txt), ("images", _read_images_bin, _read_images_txt)):
        if (d / f"{stem}.bin").is_file():
            out.append(rb(d / f"{stem}.bin"))
        elif (d / f"{stem}.txt").is_file():
            out.append(rt(d / f"{stem}.txt"))
        else:
            raise DatasetError(f"{d}: COLMAP model has no {stem}.bin or {stem}.txt")
    cams, imgs = out
    for im in imgs.values():
        if im.camera_id not in cams:
            raise DatasetError(f"{d}: image {im.name!r}: field 'camera_id': camera {im.camera_id} not in the model")
        if not all(math.isfinite(v) for v in im.qvec + im.tvec):
            raise DatasetError(f"{d}: image {im.name!r}: field 'qvec/tvec': non-finite value")
    return cams, imgs


def write_colmap_model(model_dir: str | Path, cameras: Sequence[ColmapCamera], images: Sequence[ColmapImage], binary: bool = True) -> Path:
    """Write ``cameras``, ``images`` and an empty ``points3D`` (``.bin`` or ``.txt``), atomically."""
    d = Path(model_dir)
    if binary:
        cb = struct.pack("<Q", len(cameras))
        for c in cameras:
            cb += struct.pack("<iiQQ", c.camera_id, _MODEL_IDS[c.model], c.width, c.height)
            cb += struct.pack(f"<{len(c.params)}d", *c.params)
        ib = struct.pack("<Q", len(images))
        for im in images:
            ib += struct.pack("<I7di", im.image_id, *im.qvec, *im.tvec, im.camera_id)
            ib += im.name.encode("utf8") + b"\x00" + struct.pack("<Q", 0)
        atomic_write_bytes(d / "cameras.bin", cb)
        atomic_write_bytes(d / "images.bin", ib)
        atomic_write_bytes(d / "points3D.bin", struct.pack("<Q", 0))
    else:
        ct = "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        ct += "".join(f"{c.camera_id} {c.model} {c.width} {c.height} " + " ".join(repr(float(p)) for p in c.params) + "\n" for c in cameras)
        it = "# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
        it += "".join(
            f"{im.image_id} " + " ".join(repr(float(v)) for v in im.qvec + im.tvec) + f" {im.camera_id} {im.name}\n\n" for im in images
        )
        atomic_write_bytes(d / "cameras.txt", ct.encode())
        atomic_write_bytes(d / "images.txt", it.encode())
        atomic_write_bytes(d / "points3D.txt", b"# 3D point list (empty)\n")
    return d


# ----------------------------------------------------------------------------- transforms.json


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
    R = c2w[:3, :3] @ _GL_TO_CV
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
        return dict(zip(_DIST_KEYS, (float(v) for v in vals)))
    return {k: _number(obj[k], where, f"{prefix}{k}") if k in obj else 0.0 for k in _DIST_KEYS}


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


def _frames_from_colmap(scene_dir: Path, image_dir: str) -> list[Dl3dvFrame]:
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


# ----------------------------------------------------------------------------- dataset


class Dl3dvDataset(VideoDataset):
    """DL3DV-10K scenes; video ids are scene folders relative to ``root`` (``"<hash>"`` or ``"1K/<hash>"``).

    A video is the first ``window`` frames (file-name order) of a scene
    (``window=None``: all); ``frame_ids`` are positions in the full frame list.
    ``camera_source``: ``"transforms"`` (``transforms.json``) or ``"colmap"``
    (``colmap/sparse/0``). ``max_scenes`` keeps the first scenes in sorted
    order (the reference uses the first 6K). Splits: ``split_videos`` (9:1, ``seed``).
    """

    name = "dl3dv"

    def __init__(
        self,
        root: str | Path,
        labels_dir: str | Path | None = None,
        window: int | None = 150,
        image_dir: str = "images_4",
        camera_source: str = "transforms",
        world: str = "colmap",
        max_scenes: int | None = None,
        test_fraction: float = 0.1,
        seed: int = 0,
    ):
        super().__init__(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: DL3DV root is not a directory")
        if camera_source not in ("transforms", "colmap"):
            raise ValueError(f"camera_source must be 'transforms' or 'colmap', got {camera_source!r}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.labels_dir = Path(labels_dir) if labels_dir is not None else None
        self.window = window
        self.image_dir = image_dir
        self.camera_source = camera_source
        self.world = world
        marker = "transforms.json" if camera_source == "transforms" else "colmap/sparse/0"
        found = {p.parent for p in self.root.glob(f"*/{marker}")} | {p.parent for p in self.root.glob(f"*/*/{marker}")}
        if camera_source == "colmap":
            found = {p.parent.parent for p in found}
        ids = sorted(p.relative_to(self.root).as_posix() for p in found)
        self._ids = ids[:max_scenes] if max_scenes is not None else ids
        self.test_fraction, self.seed = test_fraction, seed
        self._frames: dict[str, list[Dl3dvFrame]] = {}
        self._splits: dict[str, list[str]] | None = None

    def scene_dir(self, video_id: str) -> Path:
        if video_id not in self._ids:
            raise DatasetError(f"{self.root}: unknown scene {video_id!r}")
        return self.root / video_id

    def frames_of(self, video_id: str) -> list[Dl3dvFrame]:
        """All frames of a scene (not windowed)."""
        if video_id not in self._frames:
            d = self.scene_dir(video_id)
            if self.camera_source == "transforms":
                self._frames[video_id] = read_transforms(d / "transforms.json", self.image_dir, self.world)
            else:
                self._frames[video_id] = _frames_from_colmap(d, self.image_dir)
        return self._frames[video_id]

    def videos(self, split: str | None = None) -> list[str]:
        if split is None:
            return list(self._ids)
        if split not in ("train", "test"):
            raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
        if self._splits is None:
            self._splits = split_videos(self._ids, self.test_fraction, self.seed)
        return list(self._splits[split])

    def num_frames(self, video_id: str) -> int:
        n = len(self.frames_of(video_id))
        return n if self.window is None else min(n, self.window)

    def _select(self, video_id: str, frames: Sequence[int] | None) -> list[int]:
        n = self.num_frames(video_id)
        idx = list(range(n)) if frames is None else [int(i) for i in frames]
        for i in idx:
            if not 0 <= i < n:
                raise DatasetError(f"{self.scene_dir(video_id)}: frame position {i} out of range ({n} frames in the window)")
        if not idx:
            raise DatasetError(f"{self.scene_dir(video_id)}: no frames requested")
        return idx

    def load_images(self, video_id: str, frames: Sequence[int] | None = None) -> torch.Tensor:
        d = self.scene_dir(video_id)
        allf = self.frames_of(video_id)
        imgs = []
        for i in self._select(video_id, frames):
            p = safe_join(d, allf[i].image_rel, allf[i].where, "file_path")
            imgs.append(read_rgb(p, "file_path"))
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise DatasetError(f"{d / self.image_dir}: frames differ in size ({sorted(shapes)})")
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0)

    def intrinsics(self, video_id: str, frames: Sequence[int] | None = None, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Pixel intrinsics ``[T,3,3]`` at the resolution of the image folder (read from the first image's header)."""
        d = self.scene_dir(video_id)
        allf = self.frames_of(video_id)
        idx = self._select(video_id, frames)
        if image_hw is None:
            image_hw = image_size(safe_join(d, allf[idx[0]].image_rel, allf[idx[0]].where, "file_path"), "file_path")
        H, W = image_hw
        Ks = []
        for i in idx:
            f = allf[i]
            sx, sy = W / f.full_wh[0], H / f.full_wh[1]
            Ks.append([[f.fx * sx, 0.0, f.cx * sx - PIXEL_CENTER], [0.0, f.fy * sy, f.cy * sy - PIXEL_CENTER], [0.0, 0.0, 1.0]])
        return torch.tensor(Ks, dtype=torch.float64).float()

    def load(self, video_id: str, frames: Sequence[int] | None = None) -> Clip:
        idx = self._select(video_id, frames)
        allf = self.frames_of(video_id)
        images = self.load_images(video_id, idx)
        T, _, H, W = images.shape
        K = self.intrinsics(video_id, idx, (H, W))
        E = torch.from_numpy(np.stack([allf[i].extrinsics for i in idx])).float()
        d = self.scene_dir(video_id)
        meta = {
            "dataset": "dl3dv",
            "sequence": video_id,
            "video_id": video_id,
            "source": str(d / ("transforms.json" if self.camera_source == "transforms" else "colmap/sparse/0")),
            "camera_model": allf[idx[0]].camera_model,
            "distortion": dict(allf[idx[0]].distortion),
            "distortion_params": [float(allf[idx[0]].distortion.get(k, 0.0)) for k in _DIST_KEYS],
            "world": allf[idx[0]].world,
            "applied_transform": allf[idx[0]].applied_transform,
        }
        clip = Clip(
            images=images,
            depth=torch.zeros(T, H, W),
            valid=torch.zeros(T, H, W, dtype=torch.bool),
            intrinsics=K,
            extrinsics=E,
            frame_ids=torch.tensor(idx, dtype=torch.long),
            meta=meta,
        )
        if self.labels_dir is not None:
            clip = apply_labels_file(clip, self.labels_dir / f"{video_id}.safetensors")
        return clip

    def scan(self, split: str | None = None, deep: bool = False) -> ScanReport:
        """Check every scene (first frame; every frame of the window when ``deep``); skip and count."""
        rep = ScanReport()
        for vid in self.videos(split):
            try:
                n = self.num_frames(vid)
                for i in range(n if deep else 1):
                    self.load(vid, [i])
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        return rep


# ----------------------------------------------------------------------------- writer


def write_dl3dv(
    clip: Clip,
    root: str | Path,
    scene: str,
    *,
    full_res_factor: int = 4,
    image_dir: str = "images_4",
    camera_model: str = "OPENCV",
    applied_transform: bool = True,
    per_frame_intrinsics: bool = False,
    colmap: str | None = "bin",
) -> str:
    """Export a clip as a DL3DV scene; returns the video id (``scene``).

    Frames go to ``<scene>/<image_dir>/frame_00001.png ...`` (PNG, lossless up
    to 8 bits). ``transforms.json`` describes the *full resolution*
    (``full_res_factor`` x the clip's size) as DL3DV does, with
    ``transform_matrix = applied_transform @ c2w_gl`` (nerfstudio's
    ``applied_transform`` when ``applied_transform``). ``colmap`` ("bin",
    "txt" or None) also writes ``colmap/sparse/0`` in the clip's world.
    ``applied_transform=False`` together with ``colmap`` writes what
    ``ns-process-data --keep-original-world-coordinate`` writes, a scene that
    nerfstudio's reader (and so vidprobe's, from ``transforms.json``) takes
    to hold the older transform (module docstring).
    Distortion coefficients are written as zeros for OPENCV.
    """
    root = Path(root)
    d = root / scene
    T, _, H, W = clip.images.shape
    fct = float(full_res_factor)
    imgs = (clip.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    K = clip.intrinsics.double().numpy()
    E = clip.extrinsics.double().numpy()
    A = NERFSTUDIO_APPLIED_TRANSFORM if applied_transform else np.eye(4)[:3]
    A4 = np.eye(4)
    A4[:3] = A

    def intr(t: int) -> dict[str, float]:
        v = {"fl_x": K[t, 0, 0] * fct, "fl_y": K[t, 1, 1] * fct,
             "cx": (K[t, 0, 2] + PIXEL_CENTER) * fct, "cy": (K[t, 1, 2] + PIXEL_CENTER) * fct,
             "w": int(W * fct), "h": int(H * fct)}
        if camera_model == "OPENCV":
            v.update(k1=0.0, k2=0.0, p1=0.0, p2=0.0)
        return v

    frames = []
    for t in range(T):
        name = f"frame_{t + 1:05d}.png"
        save_image(d / image_dir / name, imgs[t])
        R, tv = E[t, :, :3], E[t, :, 3]
        c2w = np.eye(4)
        c2w[:3, :3] = R.T @ _GL_TO_CV
        c2w[:3, 3] = -R.T @ tv
        fr: dict[str, Any] = {"file_path": f"images/{name}", "transform_matrix": (A4 @ c2w).tolist(), "colmap_im_id": t + 1}
        if per_frame_intrinsics:
            fr.update(intr(t))
        frames.append(fr)
    out: dict[str, Any] = {"camera_model": camera_model}
    if not per_frame_intrinsics:
        out.update(intr(0))
    out["frames"] = frames
    if applied_transform:
        out["applied_transform"] = A.tolist()
    atomic_write_json(d / "transforms.json", out, indent=1)
    if colmap is not None:
        cams, ims = [], []
        for t in range(T):
            v = intr(t)
            cams.append(ColmapCamera(t + 1, "PINHOLE", v["w"], v["h"], [v["fl_x"], v["fl_y"], v["cx"], v["cy"]]))
            q = roma.rotmat_to_unitquat(torch.from_numpy(E[t, :, :3])).numpy()  # x, y, z, w
            ims.append(ColmapImage(t + 1, [q[3], q[0], q[1], q[2]], E[t, :, 3].tolist(), t + 1, f"frame_{t + 1:05d}.png"))
        write_colmap_model(d / "colmap" / "sparse" / "0", cams, ims, binary=(colmap == "bin"))
    return scene
