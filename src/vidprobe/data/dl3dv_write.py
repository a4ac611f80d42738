"""Writer of DL3DV-format scenes (test fixtures, round trips): frames, ``transforms.json``, a COLMAP model.

:func:`write_dl3dv` writes ``<scene>/<image_dir>/frame_%05d.png`` and a
nerfstudio ``transforms.json`` for the *full* resolution (``full_res_factor``
x the clip's), in the conventions :mod:`vidprobe.data.dl3dv_cameras` reads;
optionally ``colmap/sparse/0`` (:mod:`vidprobe.data.dl3dv_colmap`) with one
``PINHOLE`` camera per frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

from vidprobe.data.clip import Clip
from vidprobe.data.dl3dv_cameras import GL_TO_CV, NERFSTUDIO_APPLIED_TRANSFORM, PIXEL_CENTER
from vidprobe.data.dl3dv_colmap import ColmapCamera, ColmapImage, write_colmap_model
from vidprobe.data.io import atomic_write_json, save_image

__all__ = ["write_dl3dv"]


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
        c2w[:3, :3] = R.T @ GL_TO_CV
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
