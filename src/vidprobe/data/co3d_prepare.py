"""The reference CO3Dv2 preprocessing: 16:9 object crop, truncation rejection, 960x540, 81 frames.

:func:`preprocess_co3d` reads a CO3D root with :class:`~vidprobe.data.co3d.Co3dDataset`
and writes the kept sequences, cropped and resized, in the same CO3D layout
(:mod:`vidprobe.data.co3d_format`), plus ``preprocess_report.json`` (a
:class:`PreprocessReport`: kept ids, rejected ids with reasons, per-video mean
truncation and crop ``[x0, y0, w, h]``). The steps are listed in
:func:`preprocess_co3d`; boxes are ``(x0, y0, w, h)`` in pixels of the source
image, bounding boxes inclusive ``(x_min, y_min, x_max, y_max)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from vidprobe.data.base import DatasetError
from vidprobe.data.co3d_format import FRAME_ANNOTATIONS, PIXEL_CENTER, SEQUENCE_ANNOTATIONS, opencv_to_ndc
from vidprobe.data.io import atomic_write_json, read_gray, read_json, read_uint16_png, safe_join, save_image

if TYPE_CHECKING:
    from vidprobe.data.co3d import Co3dDataset

__all__ = ["crop_box_for_aspect", "mask_truncation", "PreprocessReport", "preprocess_co3d"]

log = logging.getLogger("vidprobe.data.co3d")  # CO3D messages share the reader's logger


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

    from vidprobe.data.co3d import Co3dDataset  # imported here: vidprobe.data.co3d re-exports this module

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
