"""Point clouds with camera frusta as GLB (glTF 2.0 binary): POINTS and LINES primitives.

Readable by any glTF viewer (Blender, three.js, https://gltf-viewer.donmccurdy.com).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from vidprobe.atomic import atomic_path
from vidprobe.geometry import invert_extrinsics


def frustum_lines(extrinsics: torch.Tensor, intrinsics: torch.Tensor, hw: tuple[int, int], size: float = 0.15) -> np.ndarray:
    """Line segments ``[S*8, 2, 3]`` drawing each camera as a pyramid (world coordinates)."""
    h, w = hw
    c2w = invert_extrinsics(extrinsics.double())
    segs = []
    for E, K in zip(c2w, intrinsics.double()):
        corners_px = torch.tensor([[0, 0], [w, 0], [w, h], [0, h]], dtype=torch.float64)
        rays = torch.stack([(corners_px[:, 0] - K[0, 2]) / K[0, 0], (corners_px[:, 1] - K[1, 2]) / K[1, 1], torch.ones(4, dtype=torch.float64)], -1)
        pts = rays * size
        world = pts @ E[:3, :3].T + E[:3, 3]
        c = E[:3, 3]
        for i in range(4):
            segs.append(torch.stack([c, world[i]]))
            segs.append(torch.stack([world[i], world[(i + 1) % 4]]))
    return torch.stack(segs).numpy().astype(np.float32) if segs else np.zeros((0, 2, 3), np.float32)


def write_glb(path: str | Path, clouds: list[tuple[np.ndarray, np.ndarray]], lines: list[tuple[np.ndarray, tuple[float, float, float]]] = ()) -> Path:
    """Write point clouds ``(points [N,3] float, colors [N,3] uint8)`` and line sets
    ``(segments [M,2,3], rgb)`` into one GLB file (atomically)."""
    buf = bytearray()
    buffer_views, accessors, meshes, nodes, materials = [], [], [], [], []

    def add(arr: np.ndarray, target: int, comp: int, ctype: str, normalized: bool = False) -> int:
        while len(buf) % 4:
            buf.append(0)
        data = np.ascontiguousarray(arr).tobytes()
        buffer_views.append({"buffer": 0, "byteOffset": len(buf), "byteLength": len(data), "target": target})
        buf.extend(data)
        acc = {"bufferView": len(buffer_views) - 1, "componentType": comp, "count": int(arr.shape[0]), "type": ctype}
        if normalized:
            acc["normalized"] = True
        if comp == 5126:
            acc["min"] = arr.min(0).tolist() if len(arr) else [0, 0, 0]
            acc["max"] = arr.max(0).tolist() if len(arr) else [0, 0, 0]
        accessors.append(acc)
        return len(accessors) - 1

    for pts, cols in clouds:
        pts = np.asarray(pts, np.float32).reshape(-1, 3)
        cols = np.asarray(cols, np.uint8).reshape(-1, 3)
        rgba = np.concatenate([cols, np.full((len(cols), 1), 255, np.uint8)], 1)
        p = add(pts, 34962, 5126, "VEC3")
        c = add(rgba, 34962, 5121, "VEC4", normalized=True)
        meshes.append({"primitives": [{"attributes": {"POSITION": p, "COLOR_0": c}, "mode": 0}]})
        nodes.append({"mesh": len(meshes) - 1})
    for segs, rgb in lines:
        v = np.asarray(segs, np.float32).reshape(-1, 3)
        if not len(v):
            continue
        materials.append({"pbrMetallicRoughness": {"baseColorFactor": [*rgb, 1.0]}, "emissiveFactor": list(rgb)})
        p = add(v, 34962, 5126, "VEC3")
        meshes.append({"primitives": [{"attributes": {"POSITION": p}, "mode": 1, "material": len(materials) - 1}]})
        nodes.append({"mesh": len(meshes) - 1})
    while len(buf) % 4:
        buf.append(0)
    gltf = {
        "asset": {"version": "2.0", "generator": "vidprobe"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(nodes)))}],
        "nodes": nodes,
        "meshes": meshes,
        "accessors": accessors,
        "bufferViews": buffer_views,
        "buffers": [{"byteLength": len(buf)}],
    }
    if materials:
        gltf["materials"] = materials
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((4 - len(js) % 4) % 4)
    total = 12 + 8 + len(js) + 8 + len(buf)
    out = struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
    out += struct.pack("<II", len(buf), 0x004E4942) + bytes(buf)
    with atomic_path(path, keep_suffix=True) as tmp:
        tmp.write_bytes(out)
    return Path(path)


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """Parse a GLB written by :func:`write_glb` (or any GLB): ``(gltf json, binary chunk)``."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != 0x46546C67 or version != 2 or total != len(data):
        raise ValueError(f"{path}: not a glTF 2.0 binary (magic/version/length mismatch)")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != 0x4E4F534A:
        raise ValueError(f"{path}: first chunk is not JSON")
    gltf = json.loads(data[20 : 20 + jlen])
    off = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, off)
    if btype != 0x004E4942:
        raise ValueError(f"{path}: second chunk is not BIN")
    return gltf, data[off + 8 : off + 8 + blen]
