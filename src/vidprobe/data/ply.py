"""Coloured point clouds as binary little-endian PLY (opens in MeshLab, CloudCompare, Blender).

:func:`write_ply` writes ``points [N,3]`` (float32) with optional ``colors [N,3]`` (uint8) atomically;
:func:`read_ply` reads the vertex element back (any scalar property types, no list properties).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidprobe.atomic import atomic_path

__all__ = ["write_ply", "read_ply"]


def write_ply(path: str | Path, points, colors=None) -> Path:
    """Atomically write a binary little-endian PLY of ``points [N,3]`` (float32) with optional ``colors [N,3]`` uint8."""
    path = Path(path)
    pts = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{path}: points must be [N,3], got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: points contain NaN/Inf")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    cols = None
    if colors is not None:
        cols = np.asarray(colors.detach().cpu() if isinstance(colors, torch.Tensor) else colors)
        if cols.shape != pts.shape:
            raise ValueError(f"{path}: colors must be [N,3] like points {pts.shape}, got {cols.shape}")
        if cols.dtype != np.uint8:
            raise ValueError(f"{path}: colors must be uint8, got {cols.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    arr = np.empty(len(pts), dtype=fields)
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if cols is not None:
        arr["red"], arr["green"], arr["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = ["ply", "format binary_little_endian 1.0", "comment written by vidprobe", f"element vertex {len(pts)}",
              "property float x", "property float y", "property float z"]
    if cols is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(arr.tobytes())
    return path


_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "<u2", "uint16": "<u2", "short": "<i2", "int16": "<i2",
              "uint": "<u4", "uint32": "<u4", "int": "<i4", "int32": "<i4"}


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a binary little-endian PLY vertex element: ``points [N,3]`` float32 and ``colors [N,3]`` uint8 or None."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported")
    n, fields, in_vertex = None, [], False
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                n = int(parts[2])
            elif n is not None:
                break
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list":
                raise ValueError(f"{path}: list properties in the vertex element are not supported")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if n is None:
        raise ValueError(f"{path}: no 'element vertex' in the header")
    dt = np.dtype(fields)
    body = data[end + len(b"end_header\n"):]
    if len(body) < n * dt.itemsize:
        raise ValueError(f"{path}: truncated: {n} vertices need {n * dt.itemsize} bytes, file has {len(body)}")
    arr = np.frombuffer(body, dtype=dt, count=n)
    pts = np.stack([arr["x"], arr["y"], arr["z"]], -1).astype(np.float32)
    cols = None
    if all(c in dt.names for c in ("red", "green", "blue")):
        cols = np.stack([arr["red"], arr["green"], arr["blue"]], -1).astype(np.uint8)
    return pts, cols
