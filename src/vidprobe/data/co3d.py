"""CO3Dv2 reader, writer (for tests) and the reference preprocessing.

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
intrinsics_format}``. Depth in metres-ish units is ``float16(png) * scale_adjustment``.

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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset, split_videos
from vidprobe.data.clip import Clip
from vidprobe.data.io import (
    apply_labels_file,
    atomic_write_json,
    finite_floats,
    get_field,
    read_float16_png,
    read_gray,
    read_json,
    read_rgb,
    read_uint16_png,
    safe_join,
    save_image,
    write_float16_png,
)

__all__ = [
    "Co3dFrame",
    "Co3dDataset",
    "ndc_to_opencv",
    "opencv_to_ndc",
    "parse_frame_annotation",
    "write_co3d",
    "crop_box_for_aspect",
    "mask_truncation",
    "PreprocessReport",
    "preprocess_co3d",
]

log = logging.getLogger(__name__)

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
    """One parsed, validated frame annotation."""

    sequence: str
    frame_number: int
    timestamp: float | None
    image_path: str
    image_hw: tuple[int, int]
    depth_path: str | None
    depth_scale: float
    depth_mask_path: str | None
    mask_path: str | None
    R: np.ndarray
    T: np.ndarray
    focal_length: np.ndarray
    principal_point: np.ndarray
    intrinsics_format: str
    where: str
    raw: dict = field(repr=False, default_factory=dict)

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


def _resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre alignment (``floor((i + 0.5) * src / dst)``)."""
    H, W = a.shape[:2]
    h, w = hw
    ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return a[ys[:, None], xs[None, :]]


# ----------------------------------------------------------------------------- dataset


class Co3dDataset(VideoDataset):
    """CO3Dv2 in its official layout; video ids are ``"<category>/<sequence>"``.

    ``load(video, frames)``: ``frames`` are positions in the sequence ordered by
    ``frame_number``; ``frame_ids`` are the frame numbers. Depth is
    ``float16(png) * scale_adjustment``, set to 0 where the depth mask is 0 (or
    the value is not finite); ``valid = depth > 0``. Without a depth
    annotation, depth is 0 and ``valid`` False.

    Splits: with ``subset`` (e.g. ``"fewview_dev"``) from
    ``<category>/set_lists/set_lists_<subset>.json`` -- a sequence is ``test``
    if it appears in the ``test`` or ``val`` lists, ``train`` when it appears in
    ``train``. A set list naming the same sequence on both sides (a split of
    frames within sequences) cannot give a split by video: a ``DatasetError``
    names the set list file. Without ``subset``, the reference split: all video
    ids shuffled with ``seed`` and ``test_fraction`` held out (:func:`split_videos`).

    With ``labels_dir`` the geometry comes from
    ``<labels_dir>/<category>/<sequence>.safetensors`` (rows matched by frame id).

    A category whose annotation file cannot be read is left out of
    :meth:`videos` and reported by :meth:`scan` (and in ``self.problems``).
    """

    name = "co3d"

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str] | None = None,
        labels_dir: str | Path | None = None,
        subset: str | None = None,
        test_fraction: float = 0.1,
        seed: int = 0,
    ):
        super().__init__(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: CO3D root is not a directory")
        found = sorted(p.parent.name for p in self.root.glob(f"*/{FRAME_ANNOTATIONS}"))
        if categories is not None:
            missing = [c for c in categories if c not in found]
            if missing:
                raise DatasetError(f"{self.root}: categories {missing} have no {FRAME_ANNOTATIONS} (found: {found})")
            found = [c for c in found if c in set(categories)]
        self.categories = found
        self.labels_dir = Path(labels_dir) if labels_dir is not None else None
        self.subset = subset
        self.test_fraction = test_fraction
        self.seed = seed
        self.problems: dict[str, str] = {}
        self._index: dict[str, dict[str, list[tuple[int, dict]]]] = {}
        self._seq_cache: dict[str, list[Co3dFrame]] = {}
        self._splits: dict[str, list[str]] | None = None

    # -- annotations

    def annotation_path(self, category: str) -> Path:
        return self.root / category / FRAME_ANNOTATIONS

    def _category(self, category: str) -> dict[str, list[tuple[int, dict]]]:
        if category not in self._index:
            path = self.annotation_path(category)
            data = read_json(path, gz=True)
            if not isinstance(data, list):
                raise DatasetError(f"{path}: expected a JSON list of frame annotations, got {type(data).__name__}")
            groups: dict[str, list[tuple[int, dict]]] = {}
            for i, e in enumerate(data):
                seq = e.get("sequence_name") if isinstance(e, Mapping) else None
                if not isinstance(seq, str):
                    # an entry we cannot attribute to a sequence: note it, keep the rest usable
                    self.problems[f"{category}/<entry {i}>"] = f"{path}: entry {i}: field 'sequence_name': missing or not a string"
                    continue
                groups.setdefault(seq, []).append((i, e))
            self._index[category] = groups
        return self._index[category]

    def _split_id(self, video_id: str) -> tuple[str, str]:
        if not isinstance(video_id, str) or video_id.count("/") != 1:
            raise DatasetError(f"{self.root}: video id {video_id!r} is not '<category>/<sequence>'")
        cat, seq = video_id.split("/")
        if cat not in self.categories:
            raise DatasetError(f"{self.root}: unknown category {cat!r} in video id {video_id!r}")
        return cat, seq

    def frames_of(self, video_id: str) -> list[Co3dFrame]:
        """All parsed frame annotations of a video, ordered by frame number."""
        if video_id not in self._seq_cache:
            cat, seq = self._split_id(video_id)
            groups = self._category(cat)
            if seq not in groups:
                raise DatasetError(f"{self.annotation_path(cat)}: no frames of sequence {seq!r}")
            path = self.annotation_path(cat)
            frames = [parse_frame_annotation(e, f"{path}: entry {i}") for i, e in groups[seq]]
            frames.sort(key=lambda fr: fr.frame_number)
            for a, b in zip(frames, frames[1:]):
                if a.frame_number == b.frame_number:
                    raise DatasetError(f"{b.where}: field 'frame_number': duplicate frame number {b.frame_number}")
            self._seq_cache[video_id] = frames
        return self._seq_cache[video_id]

    def _all_ids(self) -> list[str]:
        ids = []
        for cat in self.categories:
            try:
                groups = self._category(cat)
            except DatasetError as e:
                self.problems[f"{cat}/*"] = str(e)
                log.warning("skipping category %s: %s", cat, e)
                continue
            ids += [f"{cat}/{s}" for s in sorted(groups)]
        return ids

    def _compute_splits(self) -> dict[str, list[str]]:
        ids = self._all_ids()
        if self.subset is None:
            return split_videos(ids, self.test_fraction, self.seed)
        train: set[str] = set()
        test: set[str] = set()
        for cat in self.categories:
            if f"{cat}/*" in self.problems:
                continue
            path = self.root / cat / "set_lists" / f"set_lists_{self.subset}.json"
            cat_train: set[str] = set()
            cat_test: set[str] = set()
            try:
                data = read_json(path)
                if not isinstance(data, Mapping):
                    raise DatasetError(f"{path}: expected an object with 'train'/'val'/'test' lists")
                for key in ("train", "val", "test"):
                    rows = data.get(key, [])
                    if not isinstance(rows, list):
                        raise DatasetError(f"{path}: field '{key}': expected a list")
                    for j, row in enumerate(rows):
                        if not isinstance(row, (list, tuple)) or not row or not isinstance(row[0], str):
                            raise DatasetError(f"{path}: field '{key}[{j}]': expected [sequence_name, frame_number, path]")
                        (cat_train if key == "train" else cat_test).add(f"{cat}/{row[0]}")
            except DatasetError as e:
                self.problems[f"{cat}/*"] = str(e)
                log.warning("skipping category %s: %s", cat, e)
                continue
            both = sorted(cat_train & cat_test)
            if both:
                # a frame-level split (CO3D's few-/many-view lists hold frames of the same sequences on both
                # sides); a split by video cannot follow it, and dropping those sequences from train would
                # empty it silently
                raise DatasetError(
                    f"{path}: set list '{self.subset}' puts {len(both)} of {len(cat_train)} 'train' sequence(s) also "
                    f"in 'val'/'test' (e.g. {', '.join(s.split('/', 1)[1] for s in both[:3])}): it splits frames "
                    f"within sequences, while vidprobe splits by video. Use subset=None (the reference 9:1 split "
                    f"by video, seed {self.seed}) or a set list whose train and test sequences are disjoint")
            train |= cat_train
            test |= cat_test
        known = set(ids)
        return {
            "train": sorted((train - test) & known),
            "test": sorted(test & known),
        }

    # -- VideoDataset

    def videos(self, split: str | None = None) -> list[str]:
        if split is None:
            return self._all_ids()
        if split not in ("train", "test"):
            raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
        if self._splits is None:
            self._splits = self._compute_splits()
        return list(self._splits[split])

    def num_frames(self, video_id: str) -> int:
        return len(self.frames_of(video_id))

    def _select(self, video_id: str, frames: Sequence[int] | None) -> list[Co3dFrame]:
        all_frames = self.frames_of(video_id)
        if frames is None:
            return all_frames
        out = []
        for i in frames:
            i = int(i)
            if not 0 <= i < len(all_frames):
                raise DatasetError(f"{self.annotation_path(video_id.split('/')[0])}: frame position {i} out of range for "
                                   f"{video_id!r} ({len(all_frames)} frames)")
            out.append(all_frames[i])
        return out

    def _read_image(self, fr: Co3dFrame) -> np.ndarray:
        path = safe_join(self.root, fr.image_path, fr.where, "image.path")
        img = read_rgb(path, "image.path")
        if img.shape[:2] != fr.image_hw:
            raise DatasetError(f"{path}: field 'image.size': annotation says {list(fr.image_hw)}, the file is {list(img.shape[:2])}")
        return img

    def _read_depth(self, fr: Co3dFrame) -> np.ndarray:
        H, W = fr.image_hw
        if fr.depth_path is None:
            return np.zeros((H, W), np.float32)
        path = safe_join(self.root, fr.depth_path, fr.where, "depth.path")
        d = read_float16_png(path, "depth.path") * np.float32(fr.depth_scale)
        if fr.depth_mask_path is not None:
            mpath = safe_join(self.root, fr.depth_mask_path, fr.where, "depth.mask_path")
            m = read_gray(mpath, "depth.mask_path") > 0
            if m.shape != d.shape:
                raise DatasetError(f"{mpath}: field 'depth.mask_path': mask is {list(m.shape)}, depth map is {list(d.shape)}")
            d = np.where(m, d, 0.0)
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        if d.shape != (H, W):
            d = _resize_nearest(d, (H, W))
        return d

    def read_mask(self, fr: Co3dFrame) -> np.ndarray:
        """Foreground probability ``[H,W]`` in [0,1] of one frame (zeros when the frame has no mask)."""
        if fr.mask_path is None:
            return np.zeros(fr.image_hw, np.float32)
        path = safe_join(self.root, fr.mask_path, fr.where, "mask.path")
        m = read_gray(path, "mask.path").astype(np.float32) / 255.0
        if m.shape != fr.image_hw:
            raise DatasetError(f"{path}: field 'mask.path': mask is {list(m.shape)}, image.size is {list(fr.image_hw)}")
        return m

    def load_masks(self, video_id: str, frames: Sequence[int] | None = None) -> torch.Tensor:
        """Foreground probabilities ``[T,H,W]`` in [0,1]."""
        return torch.from_numpy(np.stack([self.read_mask(fr) for fr in self._select(video_id, frames)]))

    def load_images(self, video_id: str, frames: Sequence[int] | None = None) -> torch.Tensor:
        return self._images(video_id, self._select(video_id, frames))

    def _images(self, video_id: str, sel: list[Co3dFrame]) -> torch.Tensor:
        self._check_same_size(video_id, sel)
        imgs = np.stack([self._read_image(fr) for fr in sel])
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)

    def _check_same_size(self, video_id: str, sel: list[Co3dFrame]) -> None:
        sizes = {fr.image_hw for fr in sel}
        if len(sizes) > 1:
            bad = next(fr for fr in sel if fr.image_hw != sel[0].image_hw)
            raise DatasetError(f"{bad.where}: field 'image.size': frames of {video_id!r} differ in size ({sorted(sizes)})")

    def load(self, video_id: str, frames: Sequence[int] | None = None) -> Clip:
        sel = self._select(video_id, frames)
        if not sel:
            raise DatasetError(f"{self.root}: no frames requested for {video_id!r}")
        images = self._images(video_id, sel)
        cat, seq = self._split_id(video_id)
        Ks, Es = zip(*(fr.opencv() for fr in sel))
        meta = {
            "dataset": "co3d",
            "category": cat,
            "sequence": seq,
            "video_id": video_id,
            "source": str(self.annotation_path(cat)),
        }
        if self.labels_dir is not None:
            depth = torch.zeros(images.shape[0], *images.shape[-2:])
        else:
            depth = torch.from_numpy(np.stack([self._read_depth(fr) for fr in sel]))
        clip = Clip(
            images=images,
            depth=depth,
            valid=depth > 0,
            intrinsics=torch.from_numpy(np.stack(Ks)).float(),
            extrinsics=torch.from_numpy(np.stack(Es)).float(),
            frame_ids=torch.tensor([fr.frame_number for fr in sel], dtype=torch.long),
            meta=meta,
        )
        if self.labels_dir is not None:
            clip = apply_labels_file(clip, self.labels_dir / cat / f"{seq}.safetensors")
        return clip

    def scan(self, split: str | None = None, deep: bool = False) -> ScanReport:
        """Check every video (first frame; every frame when ``deep``); skip and count broken ones.

        Categories whose annotations cannot be read appear as ``"<category>/*"``.
        """
        rep = ScanReport()
        for vid in self.videos(split):
            try:
                n = self.num_frames(vid)
                for i in range(n if deep else min(n, 1)):
                    self.load(vid, [i])
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        for k, v in self.problems.items():
            rep.skipped.setdefault(k, v)
        return rep


# ----------------------------------------------------------------------------- writer


def _frame_files(category: str, seq: str, n: int) -> dict[str, str]:
    stem = f"frame{n + 1:06d}"
    return {
        "image": f"{category}/{seq}/images/{stem}.jpg",
        "depth": f"{category}/{seq}/depths/{stem}.jpg.geometric.png",
        "depth_mask": f"{category}/{seq}/depth_masks/{stem}.png",
        "mask": f"{category}/{seq}/masks/{stem}.png",
    }


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_co3d(
    clips: Clip | Iterable[Clip],
    root: str | Path,
    category: str,
    *,
    sequence_names: Sequence[str] | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
    depth_scale: float = 1.0,
    intrinsics_format: str = "ndc_isotropic",
    image_ext: str = "jpg",
    jpeg_quality: int = 95,
    set_lists: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> list[str]:
    """Export clips as CO3Dv2 sequences of ``category`` under ``root``; returns the video ids.

    Images are JPEG (``image_ext="png"`` for lossless tests), depth is stored as
    ``float16(depth / depth_scale)`` in 16-bit PNGs with ``scale_adjustment =
    depth_scale``, the depth mask is the clip's ``valid``, the foreground mask
    is ``masks[i]`` (``[T,H,W]`` probabilities; default: ``valid``). Cameras are
    written in PyTorch3D NDC (``intrinsics_format``). Existing sequences of the
    category that are not rewritten are kept in the annotation files.
    ``set_lists`` maps a subset name to ``{"train": [seq...], "test": [seq...]}``.
    """
    root = Path(root)
    clips = [clips] if isinstance(clips, Clip) else list(clips)
    if image_ext not in ("jpg", "png"):
        raise ValueError(f"image_ext must be 'jpg' or 'png', got {image_ext!r}")
    cat_dir = root / category
    fa_path = cat_dir / FRAME_ANNOTATIONS
    sa_path = cat_dir / SEQUENCE_ANNOTATIONS
    frame_ann = read_json(fa_path) if fa_path.is_file() else []
    seq_ann = read_json(sa_path) if sa_path.is_file() else []
    names: list[str] = []
    new_frames: list[dict] = []
    new_seqs: list[dict] = []
    for i, clip in enumerate(clips):
        seq = sequence_names[i] if sequence_names is not None else str(clip.meta.get("sequence") or f"{i:03d}_synthetic")
        if "/" in seq or seq in names:
            raise ValueError(f"bad or duplicate sequence name {seq!r}")
        names.append(seq)
        T, _, H, W = clip.images.shape
        imgs = _to_uint8(clip.images)
        fg = masks[i] if masks is not None and masks[i] is not None else clip.valid.float()
        fg = torch.as_tensor(fg, dtype=torch.float32)
        for t in range(T):
            n = int(clip.frame_ids[t])
            files = _frame_files(category, seq, n)
            if image_ext == "png":
                files["image"] = files["image"][:-4] + ".png"
            kw = {"quality": jpeg_quality, "subsampling": 0} if image_ext == "jpg" else {}
            save_image(root / files["image"], imgs[t], **kw)
            d = torch.where(clip.valid[t], clip.depth[t], torch.zeros(())).numpy() / depth_scale
            write_float16_png(root / files["depth"], d)
            save_image(root / files["depth_mask"], (clip.valid[t] & (clip.depth[t] > 0)).numpy())
            m = fg[t].clamp(0, 1).numpy()
            save_image(root / files["mask"], np.round(m * 255).astype(np.uint8))
            vp = opencv_to_ndc(clip.intrinsics[t].double().numpy(), clip.extrinsics[t].double().numpy(), (H, W), intrinsics_format)
            new_frames.append(
                {
                    "sequence_name": seq,
                    "frame_number": n,
                    "frame_timestamp": n / 30.0,
                    "image": {"path": files["image"], "size": [H, W]},
                    "depth": {"path": files["depth"], "scale_adjustment": float(depth_scale), "mask_path": files["depth_mask"]},
                    "mask": {"path": files["mask"], "mass": float(m.sum())},
                    "viewpoint": vp,
                    "meta": {"source": "vidprobe.write_co3d"},
                }
            )
        new_seqs.append({"sequence_name": seq, "category": category, "video": None, "point_cloud": None,
                         "viewpoint_quality_score": 1.0})
    keep = set(names)
    frame_ann = [e for e in frame_ann if not (isinstance(e, Mapping) and e.get("sequence_name") in keep)] + new_frames
    seq_ann = [e for e in seq_ann if not (isinstance(e, Mapping) and e.get("sequence_name") in keep)] + new_seqs
    atomic_write_json(fa_path, frame_ann)
    atomic_write_json(sa_path, seq_ann)
    for subset, parts in (set_lists or {}).items():
        out: dict[str, list] = {"train": [], "val": [], "test": []}
        for key, seqs in parts.items():
            if key not in out:
                raise ValueError(f"set list key must be train/val/test, got {key!r}")
            for e in frame_ann:
                if e["sequence_name"] in set(seqs):
                    out[key].append([e["sequence_name"], e["frame_number"], e["image"]["path"]])
        atomic_write_json(cat_dir / "set_lists" / f"set_lists_{subset}.json", out)
    return [f"{category}/{s}" for s in names]


# ----------------------------------------------------------------------------- reference preprocessing


def crop_box_for_aspect(
    bbox_xyxy: tuple[int, int, int, int], image_hw: tuple[int, int], aspect: tuple[int, int] = (16, 9)
) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, w, h)`` of exact aspect ``aspect = (aw, ah)`` around a box.

    ``bbox_xyxy`` is inclusive pixel bounds ``(x_min, y_min, x_max, y_max)``.
    The crop is the smallest ``(aw k) x (ah k)`` box (integer ``k``) that
    contains the bbox, centred on it and shifted to lie inside the image; when
    no such box fits the image, the largest one that fits (still centred as
    far as the image allows) -- then part of the object is cut off.
    """
    x_min, y_min, x_max, y_max = bbox_xyxy
    H, W = image_hw
    aw, ah = aspect
    bw, bh = x_max - x_min + 1, y_max - y_min + 1
    k_max = min(W // aw, H // ah)
    if k_max < 1:
        raise DatasetError(f"image of size {W}x{H} is smaller than one {aw}:{ah} unit")
    k = min(max(math.ceil(bw / aw), math.ceil(bh / ah), 1), k_max)
    cw, ch = aw * k, ah * k
    x0 = int(round((x_min + x_max + 1) / 2.0 - cw / 2.0))
    y0 = int(round((y_min + y_max + 1) / 2.0 - ch / 2.0))
    x0 = min(max(x0, 0), W - cw)
    y0 = min(max(y0, 0), H - ch)
    return x0, y0, cw, ch


def mask_truncation(mask: np.ndarray, box: tuple[int, int, int, int]) -> float | None:
    """Fraction of a boolean object mask's area that lies outside ``box = (x0, y0, w, h)``.

    ``None`` when the mask is empty (the frame has no object to truncate).
    """
    total = int(mask.sum())
    if total == 0:
        return None
    x0, y0, w, h = box
    inside = int(mask[y0 : y0 + h, x0 : x0 + w].sum())
    return 1.0 - inside / total


@dataclass
class PreprocessReport:
    """What :func:`preprocess_co3d` did: kept videos, rejected ones with reasons, per-video numbers."""

    kept: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    truncation: dict[str, float] = field(default_factory=dict)
    crops: dict[str, list[int]] = field(default_factory=dict)
    skipped_categories: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{len(self.kept)} sequences kept, {len(self.rejected)} rejected"]
        reasons: dict[str, int] = {}
        for r in self.rejected.values():
            key = r.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        lines += [f"  {n} x {k}" for k, n in sorted(reasons.items())]
        lines += [f"  category {c} skipped: {r}" for c, r in sorted(self.skipped_categories.items())]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "kept": self.kept,
            "rejected": self.rejected,
            "truncation": self.truncation,
            "crops": self.crops,
            "skipped_categories": self.skipped_categories,
        }


def _crop_resize_nearest(a: np.ndarray, box: tuple[int, int, int, int], image_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest sample of map ``a`` (any resolution covering the image) for each output pixel centre.

    Output pixel ``(u', v')`` has screen (corner) coordinate ``u' + 0.5``; it
    maps to image screen coordinate ``x0 + (u' + 0.5) w / W_out`` and to map
    pixel ``floor(that * W_map / W_img)``.
    """
    x0, y0, w, h = box
    H, W = image_hw
    oh, ow = out_hw
    mh, mw = a.shape[:2]
    xs = np.floor((x0 + (np.arange(ow) + 0.5) * w / ow) * mw / W).astype(np.int64).clip(0, mw - 1)
    ys = np.floor((y0 + (np.arange(oh) + 0.5) * h / oh) * mh / H).astype(np.int64).clip(0, mh - 1)
    return a[ys[:, None], xs[None, :]]


def _adjust_intrinsics(K: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics after cropping ``box`` and resizing it to ``out_hw`` (pixel-centre convention)."""
    x0, y0, w, h = box
    oh, ow = out_hw
    sx, sy = ow / w, oh / h
    K2 = K.copy()
    K2[0, 0] = K[0, 0] * sx
    K2[1, 1] = K[1, 1] * sy
    K2[0, 2] = (K[0, 2] + PIXEL_CENTER - x0) * sx - PIXEL_CENTER
    K2[1, 2] = (K[1, 2] + PIXEL_CENTER - y0) * sy - PIXEL_CENTER
    return K2


def _preprocess_sequence(ds: Co3dDataset, vid: str, dst: Path, out_hw, num_frames, min_frames, max_truncation,
                         mask_threshold, jpeg_quality, rep: PreprocessReport) -> list[dict] | None:
    from PIL import Image

    frames = ds.frames_of(vid)
    if len(frames) < min_frames:
        rep.rejected[vid] = f"too few frames: {len(frames)} < {min_frames}"
        return None
    frames = frames[:num_frames]
    hw = frames[0].image_hw
    for fr in frames:
        if fr.image_hw != hw:
            raise DatasetError(f"{fr.where}: field 'image.size': {list(fr.image_hw)} differs from the first frame's {list(hw)}")
        if fr.mask_path is None:
            raise DatasetError(f"{fr.where}: field 'mask': missing (the crop needs object masks)")
    masks = [ds.read_mask(fr) >= mask_threshold for fr in frames]
    union = np.logical_or.reduce(masks)
    if not union.any():
        rep.rejected[vid] = "empty object mask: no pixel above the mask threshold in any frame"
        return None
    ys, xs = np.nonzero(union)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    oh, ow = out_hw
    g = math.gcd(ow, oh)
    box = crop_box_for_aspect(bbox, hw, (ow // g, oh // g))
    truncs = [t for t in (mask_truncation(m, box) for m in masks) if t is not None]
    trunc = float(np.mean(truncs))
    rep.truncation[vid] = trunc
    rep.crops[vid] = list(box)
    if trunc > max_truncation:
        rep.rejected[vid] = f"truncation: mean truncation {trunc:.3f} > {max_truncation}"
        return None
    x0, y0, w, h = box
    cat, seq = vid.split("/")
    out = []
    for fr in frames:
        src_img = safe_join(ds.root, fr.image_path, fr.where, "image.path")
        img = ds._read_image(fr)
        with Image.fromarray(img) as im:
            res = np.asarray(im.resize((ow, oh), Image.Resampling.LANCZOS, box=(x0, y0, x0 + w, y0 + h)))
        stem = Path(fr.image_path).name
        entry = {k: v for k, v in fr.raw.items() if k not in ("image", "depth", "mask", "viewpoint", "meta")}
        img_rel = f"{cat}/{seq}/images/{Path(stem).with_suffix('.jpg').name}"
        save_image(dst / img_rel, res, quality=jpeg_quality, subsampling=0)
        entry["image"] = {"path": img_rel, "size": [oh, ow]}
        if fr.depth_path is not None:
            dpath = safe_join(ds.root, fr.depth_path, fr.where, "depth.path")
            raw = read_uint16_png(dpath, "depth.path")  # keep the float16 bit patterns: exact values
            d_rel = f"{cat}/{seq}/depths/{Path(fr.depth_path).name}"
            save_image(dst / d_rel, _crop_resize_nearest(raw, box, hw, out_hw))
            entry["depth"] = {"path": d_rel, "scale_adjustment": fr.depth_scale, "mask_path": None}
            if fr.depth_mask_path is not None:
                mpath = safe_join(ds.root, fr.depth_mask_path, fr.where, "depth.mask_path")
                dm = read_gray(mpath, "depth.mask_path") > 0
                dm_rel = f"{cat}/{seq}/depth_masks/{Path(fr.depth_mask_path).name}"
                save_image(dst / dm_rel, _crop_resize_nearest(dm, box, hw, out_hw))
                entry["depth"]["mask_path"] = dm_rel
        fg = ds.read_mask(fr)
        with Image.fromarray(np.round(fg * 255).astype(np.uint8)) as im:
            fg2 = np.asarray(im.resize((ow, oh), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h)))
        m_rel = f"{cat}/{seq}/masks/{Path(fr.mask_path).name}"
        save_image(dst / m_rel, fg2)
        entry["mask"] = {"path": m_rel, "mass": float(fg2.astype(np.float64).sum() / 255.0)}
        K, E = fr.opencv()
        entry["viewpoint"] = opencv_to_ndc(_adjust_intrinsics(K, box, out_hw), E, out_hw, "ndc_isotropic")
        # keep the original rotation/translation bit-exact (the crop does not move the camera)
        entry["viewpoint"]["R"] = fr.R.tolist()
        entry["viewpoint"]["T"] = fr.T.tolist()
        meta = dict(fr.raw.get("meta") or {})
        meta["vidprobe_crop_xywh"] = list(box)
        meta["vidprobe_source_image"] = str(src_img)
        entry["meta"] = meta
        out.append(entry)
    return out


def preprocess_co3d(
    src_root: str | Path,
    dst_root: str | Path,
    *,
    categories: Sequence[str] | None = None,
    out_hw: tuple[int, int] = (540, 960),
    num_frames: int = 81,
    min_frames: int | None = None,
    max_truncation: float = 0.25,
    mask_threshold: float = 0.5,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessReport:
    """The reference CO3Dv2 preprocessing; writes the result in the same CO3D layout.

    For each sequence:

    1. keep the first ``num_frames`` frames (by frame number); sequences with
       fewer than ``min_frames`` (default ``num_frames``) are rejected;
    2. object mask of a frame = foreground probability ``>= mask_threshold``;
       take the bounding box of the union of the masks over the kept frames;
    3. crop: the smallest box of the output aspect (``out_hw``, 16:9 by
       default; exact integer multiples) containing that bounding box, centred
       on it and shifted into the image; if the image is too small for such a
       box, the largest one that fits (:func:`crop_box_for_aspect`);
    4. **truncation** of a frame = the fraction of that frame's object-mask
       area (pixel count) lying outside the crop; the sequence's truncation is
       the mean over its frames with a non-empty mask; reject when it exceeds
       ``max_truncation`` (0.25);
    5. resize the crop to ``out_hw`` (960x540): images Lanczos -> JPEG,
       foreground masks bilinear, depth and depth masks nearest (depth keeps its
       float16 bit patterns and ``scale_adjustment``, so values are exact);
       intrinsics follow the crop and resize exactly, R and T are unchanged.

    Broken sequences are rejected with the error as the reason (skip and count);
    a category whose annotations cannot be read is skipped. A category already
    present in ``dst_root`` is skipped unless ``overwrite``. The report is also
    written to ``<dst_root>/preprocess_report.json``.
    """
    from tqdm import tqdm

    src_root, dst_root = Path(src_root), Path(dst_root)
    min_frames = num_frames if min_frames is None else min_frames
    ds = Co3dDataset(src_root, categories=categories)
    rep = PreprocessReport()
    for cat in ds.categories:
        dst_ann = dst_root / cat / FRAME_ANNOTATIONS
        if dst_ann.exists() and not overwrite:
            rep.skipped_categories[cat] = f"already in {dst_root} (pass overwrite=True to redo)"
            continue
        try:
            groups = ds._category(cat)
        except DatasetError as e:
            rep.skipped_categories[cat] = str(e)
            continue
        entries: list[dict] = []
        kept_seqs: set[str] = set()
        for seq in tqdm(sorted(groups), desc=f"co3d {cat}", disable=not progress, leave=False):
            vid = f"{cat}/{seq}"
            try:
                out = _preprocess_sequence(ds, vid, dst_root, out_hw, num_frames, min_frames, max_truncation,
                                           mask_threshold, jpeg_quality, rep)
            except Exception as e:  # noqa: BLE001 - one broken sequence never stops the run
                rep.rejected[vid] = f"error: {type(e).__name__}: {e}"
                continue
            if out is not None:
                entries += out
                kept_seqs.add(seq)
                rep.kept.append(vid)
        sa_src = src_root / cat / SEQUENCE_ANNOTATIONS
        seq_ann: list = []
        if sa_src.is_file():
            try:
                data = read_json(sa_src)
                seq_ann = [e for e in data if isinstance(e, Mapping) and e.get("sequence_name") in kept_seqs]
            except DatasetError as e:
                log.warning("%s", e)
        else:
            seq_ann = [{"sequence_name": s, "category": cat} for s in sorted(kept_seqs)]
        atomic_write_json(dst_root / cat / SEQUENCE_ANNOTATIONS, seq_ann)
        atomic_write_json(dst_ann, entries)
    atomic_write_json(dst_root / "preprocess_report.json", rep.to_json(), indent=1)
    for p in ds.problems.values():
        log.warning("%s", p)
    return rep
