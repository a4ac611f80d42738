"""The native dataset layout (what `vidprobe prepare synthetic` writes).

::

    root/dataset.json                 {"format": "vidprobe-native", "version": 1,
                                       "videos": [...], "splits": {"train": [...], "test": [...]},
                                       "generator": {...}, "complete": true}
    root/<video_id>/frames/000000.png 8-bit RGB, one per frame
    root/<video_id>/labels.safetensors ground truth of every frame (:mod:`vidprobe.data.labels`)

Frame ``i`` of a video is ``frames/{i:06d}.png`` and row ``i`` of its labels
file. :class:`NativeDataset` reads only the requested frames' PNGs and label
slices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset
from vidprobe.data.clip import Clip
from vidprobe.atomic import atomic_path, atomic_write_bytes
from vidprobe.data.labels import LabelsError, LabelsFile, apply_labels, write_labels_from_clip

__all__ = [
    "NATIVE_FORMAT",
    "NATIVE_VERSION",
    "DATASET_JSON",
    "NativeDataset",
    "read_dataset_json",
    "write_dataset_json",
    "write_video",
    "write_png",
    "read_png",
    "frame_path",
    "is_video_complete",
]

NATIVE_FORMAT = "vidprobe-native"
NATIVE_VERSION = 1
DATASET_JSON = "dataset.json"
LABELS_NAME = "labels.safetensors"
FRAMES_DIR = "frames"


def frame_path(video_dir: str | Path, i: int) -> Path:
    return Path(video_dir) / FRAMES_DIR / f"{int(i):06d}.png"


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> None:
    """Atomically write an RGB image (``[3,H,W]`` float in [0,1] or ``[H,W,3]`` uint8) as an 8-bit PNG."""
    path = Path(path)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            arr = image.cpu().numpy()
        else:
            arr = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected an RGB image [H,W,3] uint8 or [3,H,W] float, got {arr.shape} {arr.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr), mode="RGB").save(tmp, format="PNG")


def read_png(path: str | Path) -> torch.Tensor:
    """An 8-bit RGB PNG as ``[3,H,W]`` float in [0,1]; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: frame image not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise DatasetError(f"{path}: cannot decode image (truncated or corrupt PNG?): {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _require(d: dict, key: str, typ, where: str):
    if key not in d:
        raise DatasetError(f"{where}: missing key '{key}'")
    if not isinstance(d[key], typ):
        raise DatasetError(f"{where}: key '{key}' must be {getattr(typ, '__name__', typ)}, got {type(d[key]).__name__}")
    return d[key]


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """Read and check ``root/dataset.json``; errors name the file and the key."""
    p = Path(root) / DATASET_JSON
    if not p.is_file():
        raise DatasetError(f"{p}: not found (is {root} a vidprobe-native dataset? write one with `vidprobe prepare synthetic`)")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: invalid JSON: {e}") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{p}: expected a JSON object at the top level, got {type(d).__name__}")
    fmt = _require(d, "format", str, str(p))
    if fmt != NATIVE_FORMAT:
        raise DatasetError(f"{p}: key 'format': expected {NATIVE_FORMAT!r}, got {fmt!r}")
    ver = _require(d, "version", int, str(p))
    if ver != NATIVE_VERSION:
        raise DatasetError(f"{p}: key 'version': unsupported version {ver} (reader knows {NATIVE_VERSION})")
    videos = _require(d, "videos", list, str(p))
    if not all(isinstance(v, str) for v in videos):
        raise DatasetError(f"{p}: key 'videos': expected a list of strings")
    splits = _require(d, "splits", dict, str(p))
    known = set(videos)
    for name, ids in splits.items():
        if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
            raise DatasetError(f"{p}: key 'splits.{name}': expected a list of strings")
        unknown = [v for v in ids if v not in known]
        if unknown:
            raise DatasetError(f"{p}: key 'splits.{name}': unknown video ids {unknown[:5]}")
    return d


def write_dataset_json(
    root: str | Path,
    videos: Sequence[str],
    splits: dict[str, list[str]],
    generator: dict[str, Any] | None = None,
    complete: bool = True,
) -> Path:
    """Atomically write ``root/dataset.json``."""
    d = {
        "format": NATIVE_FORMAT,
        "version": NATIVE_VERSION,
        "videos": list(videos),
        "splits": {k: list(v) for k, v in splits.items()},
        "generator": generator or {},
        "complete": bool(complete),
    }
    p = Path(root) / DATASET_JSON
    atomic_write_bytes(p, (json.dumps(d, indent=1) + "\n").encode())
    return p


def write_video(video_dir: str | Path, clip: Clip, labeler: str = "unknown") -> Path:
    """Write one clip's frames (PNGs) and then its labels file (written last, so it marks completion)."""
    video_dir = Path(video_dir)
    for i in range(clip.num_frames):
        write_png(frame_path(video_dir, i), clip.images[i])
    write_labels_from_clip(video_dir / LABELS_NAME, clip, meta={"labeler": labeler})
    return video_dir


def is_video_complete(video_dir: str | Path, num_frames: int | None = None, hw: tuple[int, int] | None = None) -> bool:
    """Labels file readable (and of the expected size) and every frame PNG present."""
    video_dir = Path(video_dir)
    try:
        lf = LabelsFile(video_dir / LABELS_NAME)
    except LabelsError:
        return False
    if num_frames is not None and lf.num_frames != num_frames:
        return False
    if hw is not None and lf.hw != tuple(hw):
        return False
    return all(frame_path(video_dir, i).is_file() for i in range(lf.num_frames))


class NativeDataset(VideoDataset):
    """Reader of the native layout; implements :class:`vidprobe.data.base.VideoDataset`."""

    name = "native"

    def __init__(self, root: str | Path, labels_dir: str | Path | None = None):
        super().__init__(root)
        #: ground truth from ``<labels_dir>/<video id>.safetensors`` (`vidprobe label`) instead of the video's own
        self.labels_dir = Path(labels_dir) if labels_dir is not None else None
        self.info = read_dataset_json(self.root)
        self._videos: list[str] = list(self.info["videos"])
        self._splits: dict[str, list[str]] = {k: list(v) for k, v in self.info["splits"].items()}
        self._labels: dict[str, LabelsFile] = {}
        gen = self.info.get("generator") or {}
        self.dataset_name = "synthetic" if str(gen.get("name", "")).endswith("synthetic") else "native"

    def __repr__(self) -> str:
        return f"NativeDataset({str(self.root)!r}, videos={len(self._videos)})"

    def videos(self, split: str | None = None) -> list[str]:
        if split is None:
            return list(self._videos)
        if split not in self._splits:
            raise DatasetError(f"{self.root / DATASET_JSON}: key 'splits': no split {split!r} (has {sorted(self._splits)})")
        return list(self._splits[split])

    def _check_id(self, video_id: str) -> None:
        if video_id not in self._videos:
            raise DatasetError(f"{self.root / DATASET_JSON}: key 'videos': unknown video id {video_id!r}")

    def labels(self, video_id: str) -> LabelsFile:
        """The video's labels file (header read and checked once, then cached)."""
        self._check_id(video_id)
        if video_id not in self._labels:
            self._labels[video_id] = LabelsFile(self.root / video_id / LABELS_NAME)
        return self._labels[video_id]

    def num_frames(self, video_id: str) -> int:
        return self.labels(video_id).num_frames

    def _frames(self, video_id: str, frames: Sequence[int] | None) -> list[int]:
        n = self.num_frames(video_id)
        if frames is None:
            return list(range(n))
        out = [int(f) for f in frames]
        bad = [f for f in out if not 0 <= f < n]
        if bad:
            raise DatasetError(f"{self.root / video_id}: frames {bad} out of range (video has {n} frames)")
        return out

    def load_images(self, video_id: str, frames: Sequence[int] | None = None) -> torch.Tensor:
        idx = self._frames(video_id, frames)
        hw = self.labels(video_id).hw
        imgs = []
        for i in idx:
            p = frame_path(self.root / video_id, i)
            im = read_png(p)
            if tuple(im.shape[-2:]) != hw:
                raise DatasetError(f"{p}: image size {tuple(im.shape[-2:])} != labels size {hw}")
            imgs.append(im)
        if not imgs:
            raise DatasetError(f"{self.root / video_id}: no frames requested")
        return torch.stack(imgs)

    def load(self, video_id: str, frames: Sequence[int] | None = None) -> Clip:
        idx = self._frames(video_id, frames)
        lf = self.labels(video_id)
        images = self.load_images(video_id, idx)
        lab = lf.read(idx)
        meta = {
            "dataset": lf.meta.get("dataset", self.dataset_name),
            "sequence": lf.meta.get("sequence", video_id),
            "category": lf.meta.get("category", ""),
            "source": str(self.root / video_id),
            "video_id": video_id,
        }
        try:
            clip = apply_labels(images, lab, meta=meta)
        except DatasetError:
            raise
        except ValueError as e:  # ClipError: the message already names the field
            raise DatasetError(f"{lf.path}: {e}") from e
        if self.labels_dir is not None:  # rows matched by frame id, images resized to the labels' size
            from vidprobe.data.io import apply_labels_file

            clip = apply_labels_file(clip, self.labels_dir / f"{video_id}.safetensors")
        return clip

    def scan(self, split: str | None = None, deep: bool = False) -> ScanReport:
        """Check every video (labels header, every frame PNG present, first and last frame load; with ``deep``
        every frame loads and has the video's size)."""
        rep = ScanReport()
        for vid in self.videos(split):
            try:
                self._labels.pop(vid, None)
                n = self.num_frames(vid)
                if n < 1:
                    raise DatasetError(f"{self.root / vid / LABELS_NAME}: no frames")
                missing = [i for i in range(n) if not frame_path(self.root / vid, i).is_file()]
                if missing:
                    raise DatasetError(f"{frame_path(self.root / vid, missing[0])}: frame image not found ({len(missing)} missing)")
                self.load(vid, sorted({0, n - 1}))
                if deep:  # each frame against the labels' size (load_images checks it), then against each other
                    self.check_frame_sizes(vid, {i: tuple(self.load_images(vid, [i]).shape[-2:]) for i in range(n)})
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        return rep
