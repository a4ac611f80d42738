"""Built-in synthetic multi-view data with exact ground truth (no downloads): one clip, or a whole dataset.

:func:`generate_clip` renders the video of ``(family, seed)``;
:func:`write_synthetic_dataset` writes many into the native layout
(:mod:`vidprobe.data.native`). The parts, one concept each:

* :mod:`vidprobe.data.synthetic_scene`: textured primitives (boxes, spheres,
  vertical cylinders, finite planes), procedural materials (checker, value
  noise, stripes), the :class:`Scene`;
* :mod:`vidprobe.data.synthetic_render`: OpenCV pinhole cameras and
  vectorised ray casting in torch (one ray per pixel centre, analytic
  ray-primitive intersection, nearest hit, Lambert + ambient shading);
* :mod:`vidprobe.data.synthetic_layout`: the ``orbit`` (CO3D-like) and
  ``walk`` (DL3DV-like) families' layouts and camera paths.

Their public names are re-exported here. Geometry is computed in float64 and
stored as float32. Cameras are OpenCV (x right, y down, z forward),
world->camera, principal point at the image centre ``(W/2, H/2)``; the world
is z-up, the ground is ``z = 0``; depth is camera z, 0 (``valid = False``,
world point 0) where a ray hits nothing (sky).

Everything is deterministic from ``(family, seed)``; the scene layout and the
camera path do not depend on the resolution or the frame count (the path is
parametrised over ``[0, 1]`` and sampled at ``num_frames`` points).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vidprobe.data.clip import Clip
from vidprobe.data.synthetic_layout import FAMILIES, make_scene
from vidprobe.data.synthetic_render import cast_rays, look_at, make_intrinsics, render
from vidprobe.data.synthetic_scene import Box, Cylinder, Material, Plane, Primitive, Scene, Sphere  # noqa: F401 (re-exported)

__all__ = [
    "FAMILIES",
    "generate_clip",
    "write_synthetic_dataset",
    "make_scene",
    "render",
    "look_at",
    "make_intrinsics",
    "cast_rays",
]


def generate_clip(
    family: str = "orbit",
    seed: int = 0,
    num_frames: int = 81,
    hw: tuple[int, int] = (64, 112),
    fov_deg: float = 60.0,
) -> Clip:
    """Render one synthetic video with exact ground truth.

    ``fov_deg`` is the horizontal field of view. Returns a Clip with images,
    exact depth (z, 0 on sky), valid (False on sky), world points, intrinsics
    (principal point at the image centre), world->camera extrinsics,
    ``frame_ids = 0..T-1`` and ``confidence = 1``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"hw must be positive, got {hw}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg}")
    scene, path = make_scene(family, seed)
    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    eye, tgt = path(s)
    E = look_at(torch.from_numpy(np.ascontiguousarray(eye)), torch.from_numpy(np.ascontiguousarray(tgt)))
    K = make_intrinsics((h, w), fov_deg, num_frames)
    out = render(scene, E, K, (h, w))
    params = {"family": family, "seed": seed, "num_frames": num_frames, "hw": [h, w], "fov_deg": fov_deg}
    return Clip(
        images=out["images"].float(),
        depth=out["depth"].float(),
        valid=out["valid"],
        intrinsics=K.float(),
        extrinsics=E.float(),
        frame_ids=torch.arange(num_frames, dtype=torch.long),
        confidence=torch.ones(num_frames, h, w),
        points=out["points"].float(),
        meta={
            "dataset": "synthetic",
            "sequence": f"{family}_{seed:05d}",
            "category": family,
            "source": "synthetic:" + json.dumps(params, sort_keys=True),
        },
    )


# ----------------------------------------------------------------------------- dataset writer


def write_synthetic_dataset(
    root: str | Path,
    num_videos: int,
    families: Sequence[str] = FAMILIES,
    num_frames: int = 81,
    hw: tuple[int, int] = (64, 112),
    seed: int = 0,
    test_fraction: float = 0.1,
    progress: bool = True,
    fov_deg: float = 60.0,
) -> Path:
    """Render ``num_videos`` videos into the native layout (:mod:`vidprobe.data.native`).

    Video ``i`` has family ``families[i % len(families)]`` and seed ``seed + i``
    (id ``f"{family}_{seed+i:05d}"``). Resumable: finished videos (labels file
    present and readable, all frames present) are skipped; a root written with
    other generator parameters is refused. Returns ``root``.
    """
    from tqdm.auto import tqdm

    from vidprobe.data.base import DatasetError, split_videos
    from vidprobe.data.native import DATASET_JSON, is_video_complete, read_dataset_json, write_dataset_json, write_video

    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    families = list(families)
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"synthetic family must be one of {FAMILIES}, got {fam!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    gen = {"name": "vidprobe.data.synthetic", "families": families, "num_frames": int(num_frames),
           "hw": [int(hw[0]), int(hw[1])], "seed": int(seed), "fov_deg": float(fov_deg)}
    ids = [f"{families[i % len(families)]}_{seed + i:05d}" for i in range(num_videos)]
    dj = root / DATASET_JSON
    if dj.exists():
        old = read_dataset_json(root)
        old_gen = {k: v for k, v in old.get("generator", {}).items() if k != "num_videos"}
        if old_gen != gen:
            raise DatasetError(
                f"{dj}: field 'generator': this directory was written with {old_gen}, not {gen}; "
                "use another output directory"
            )
    splits = split_videos(ids, test_fraction=test_fraction, seed=seed)
    gen_full = dict(gen, num_videos=int(num_videos))
    write_dataset_json(root, ids, splits, generator=gen_full, complete=False)
    skipped = 0
    for vid in tqdm(ids, desc="synthetic videos", disable=not progress, unit="video"):
        fam, s = vid.rsplit("_", 1)
        if is_video_complete(root / vid, num_frames, (int(hw[0]), int(hw[1]))):
            skipped += 1
            continue
        clip = generate_clip(fam, int(s), num_frames=num_frames, hw=hw, fov_deg=fov_deg)
        write_video(root / vid, clip, labeler="exact (vidprobe.data.synthetic)")
    write_dataset_json(root, ids, splits, generator=gen_full, complete=True)
    return root
