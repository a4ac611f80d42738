"""DL3DV-10K reader: :class:`Dl3dvDataset`, scenes of nerfstudio ``transforms.json`` / COLMAP cameras.

Layout (DL3DV-ALL-960P; scene folders may sit one level down, e.g. ``1K/<hash>``)::

    <root>/<scene>/images_4/frame_00001.png ...      960x540 frames (what we read)
    <root>/<scene>/transforms.json                   nerfstudio cameras (full resolution)
    <root>/<scene>/colmap/sparse/0/{cameras,images,points3D}.{bin,txt}   optional

How the cameras are read (nerfstudio's rules, the world, OpenGL -> OpenCV,
intrinsics scaled to the image folder) is :mod:`vidprobe.data.dl3dv_cameras`;
COLMAP model IO is :mod:`vidprobe.data.dl3dv_colmap`; the writer used by tests
and round trips is :mod:`vidprobe.data.dl3dv_write`. Their public names are
re-exported here (``from vidprobe.data.dl3dv import write_dl3dv`` keeps working).

A loaded :class:`Clip` has ``images [T,3,H,W]`` in [0,1], OpenCV
``intrinsics [T,3,3]`` at the image folder's resolution (pixel-centre
convention), world->camera ``extrinsics [T,3,4]``, ``frame_ids`` = positions
in the scene's frame list, and ``meta`` keys ``camera_model``, ``distortion``,
``distortion_params``, ``world``, ``applied_transform``. Lens distortion is
*not* undone. Depth is absent from DL3DV: without a labels file a clip has
depth 0 and ``valid`` False; with ``labels_dir`` the geometry comes from
``<labels_dir>/<scene id>.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset, split_videos
from vidprobe.data.clip import Clip
from vidprobe.data.dl3dv_cameras import (
    DIST_KEYS,
    NERFSTUDIO_APPLIED_TRANSFORM,
    NERFSTUDIO_LEGACY_TRANSFORM,
    PIXEL_CENTER,
    Dl3dvFrame,
    frames_from_colmap,
    read_transforms,
)
from vidprobe.data.dl3dv_colmap import (
    ColmapCamera,
    ColmapImage,
    colmap_intrinsics,
    read_colmap_model,
    write_colmap_model,
)
from vidprobe.data.dl3dv_colmap import COLMAP_MODELS, PERSPECTIVE_MODELS  # noqa: F401 (re-exported)
from vidprobe.data.dl3dv_write import write_dl3dv
from vidprobe.data.io import apply_labels_file, image_size, read_rgb, safe_join

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
                self._frames[video_id] = frames_from_colmap(d, self.image_dir)
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
            "distortion_params": [float(allf[idx[0]].distortion.get(k, 0.0)) for k in DIST_KEYS],
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
                sizes = {i: tuple(self.load(vid, [i]).images.shape[-2:]) for i in range(n if deep else min(n, 1))}
                self.check_frame_sizes(vid, sizes)  # deep: a frame of another size than the video's others
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        return rep
