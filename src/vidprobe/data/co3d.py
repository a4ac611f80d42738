"""CO3Dv2 reader: :class:`Co3dDataset`, the official layout as a :class:`VideoDataset`.

The format (layout, annotation fields, the PyTorch3D NDC -> OpenCV camera
conversion) is :mod:`vidprobe.data.co3d_format`; the writer used by tests and
round trips is :mod:`vidprobe.data.co3d_write`; the reference preprocessing
(16:9 crop, truncation rejection, 960x540, 81 frames) is
:mod:`vidprobe.data.co3d_prepare`. Their public names are re-exported here, so
``from vidprobe.data.co3d import write_co3d, preprocess_co3d`` keeps working.

A loaded :class:`Clip` has ``images [T,3,H,W]`` in [0,1], ``depth [T,H,W]``
(``float16(png) * scale_adjustment``, 0 where masked or missing), ``valid =
depth > 0``, OpenCV ``intrinsics [T,3,3]`` (pixel-centre convention) and
world->camera ``extrinsics [T,3,4]``, ``frame_ids`` = CO3D frame numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset, split_videos
from vidprobe.data.clip import Clip
from vidprobe.data.co3d_format import FRAME_ANNOTATIONS, Co3dFrame, ndc_to_opencv, opencv_to_ndc, parse_frame_annotation
from vidprobe.data.co3d_format import INTRINSICS_FORMATS, PIXEL_CENTER, SEQUENCE_ANNOTATIONS  # noqa: F401 (re-exported)
from vidprobe.data.co3d_prepare import PreprocessReport, crop_box_for_aspect, mask_truncation, preprocess_co3d
from vidprobe.data.co3d_write import write_co3d
from vidprobe.data.io import apply_labels_file, read_float16_png, read_gray, read_json, read_rgb, safe_join

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
                sizes = {i: tuple(self.load(vid, [i]).images.shape[-2:]) for i in range(n if deep else min(n, 1))}
                self.check_frame_sizes(vid, sizes)  # deep: a frame of another size than the video's others
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        for k, v in self.problems.items():
            rep.skipped.setdefault(k, v)
        return rep
