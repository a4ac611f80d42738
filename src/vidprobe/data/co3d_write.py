"""Writer of CO3Dv2-format sequences (test fixtures, round trips, exports of any :class:`Clip`).

:func:`write_co3d` lays clips out in the official layout (see
:mod:`vidprobe.data.co3d_format` for it and for the camera convention):
per frame ``images/frame%06d.jpg`` (or ``.png``), ``depths/*.jpg.geometric.png``
(``float16(depth / scale)`` bits), ``depth_masks/*.png`` and ``masks/*.png``,
plus the category's ``frame_annotations.jgz``, ``sequence_annotations.jgz`` and
optional ``set_lists/set_lists_<subset>.json``. Frame file stems number from 1
(``frame_ids + 1``) and timestamps are ``frame_id / 30`` s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from vidprobe.data.clip import Clip
from vidprobe.data.co3d_format import FRAME_ANNOTATIONS, SEQUENCE_ANNOTATIONS, opencv_to_ndc
from vidprobe.data.io import atomic_write_json, read_json, save_image, write_float16_png

__all__ = ["write_co3d"]


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
