"""COLMAP sparse-model IO: ``cameras`` and ``images`` in the binary (``.bin``) and text (``.txt``) formats.

A model directory (DL3DV: ``<scene>/colmap/sparse/0``) holds
``cameras.{bin,txt}``, ``images.{bin,txt}`` and ``points3D.{bin,txt}``.
Records read and written here (little-endian in ``.bin``):

* camera: ``camera_id (int32), model_id (int32), width (uint64), height (uint64),
  params (float64 x n)``, ``n`` fixed by the model (:data:`COLMAP_MODELS`);
  text: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``;
* image: ``image_id (uint32), qw qx qy qz tx ty tz (float64), camera_id (int32),
  name (NUL-terminated), num_points2D (uint64), points2D (24 bytes each)``;
  text: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then a line of 2D points.

``qvec``/``tvec`` are world->camera, and COLMAP cameras are OpenCV cameras
(x right, y down, z forward); intrinsics put pixel corners on integers (the
centre of the top-left pixel is (0.5, 0.5)). :func:`write_colmap_model`
writes cameras and images with an empty ``points3D``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import roma
import torch

from vidprobe.data.base import DatasetError
from vidprobe.data.io import atomic_write_bytes

__all__ = [
    "COLMAP_MODELS",
    "PERSPECTIVE_MODELS",
    "ColmapCamera",
    "ColmapImage",
    "colmap_intrinsics",
    "read_colmap_model",
    "write_colmap_model",
]

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
