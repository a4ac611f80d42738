"""Quick look at a dataset: a contact sheet PNG and a coloured point cloud PLY.

* Contact sheet: one row per video: a few frames, their depth maps coloured
  with a matplotlib colormap (invalid pixels black; the colour range is the
  2-98 percentile of the video's valid depth), and the valid mask.
* Point cloud: the world points of one video's valid pixels with their
  colours, subsampled, as a binary little-endian PLY (:mod:`vidprobe.data.ply`).

Both files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from vidprobe.atomic import atomic_path
from vidprobe.data.base import VideoDataset
from vidprobe.data.clip import Clip
from vidprobe.data.ply import write_ply

__all__ = ["write_preview", "contact_sheet", "colorize_depth"]


def colorize_depth(depth: torch.Tensor, valid: torch.Tensor, cmap: str = "turbo",
                   lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Depth ``[...,H,W]`` -> RGB uint8 ``[...,H,W,3]`` (near = blue end of ``cmap``), invalid pixels black."""
    import matplotlib

    d = depth.detach().cpu().double()
    v = valid.detach().cpu().bool() & (d > 0)
    if lo is None or hi is None:
        vals = d[v]
        if vals.numel():
            q = torch.quantile(vals[torch.linspace(0, vals.numel() - 1, min(vals.numel(), 100000)).long()],
                               torch.tensor([0.02, 0.98], dtype=vals.dtype))
            lo = float(q[0]) if lo is None else lo
            hi = float(q[1]) if hi is None else hi
        else:
            lo, hi = 0.0, 1.0
    x = ((d - lo) / max(hi - lo, 1e-9)).clamp(0, 1).numpy()
    rgb = (matplotlib.colormaps[cmap](x)[..., :3] * 255).round().astype(np.uint8)
    rgb[~v.numpy()] = 0
    return rgb


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[T,3,H,W]`` float in [0,1] -> ``[T,H,W,3]`` uint8."""
    return (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pick(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def contact_sheet(clips: Sequence[Clip], frames_per_row: int = 4, cmap: str = "turbo", scale: int | None = None,
                  pad: int = 4, label_h: int = 14) -> Image.Image:
    """One row per clip: ``frames_per_row`` frames | their coloured depth | their valid masks."""
    if not clips:
        raise ValueError("contact_sheet: no clips given")
    H = max(c.hw[0] for c in clips)
    W = max(c.hw[1] for c in clips)
    if scale is None:
        scale = max(1, int(np.ceil(96 / H)))
    th, tw = H * scale, W * scale
    k = frames_per_row
    cols = 3 * k
    sheet_w = pad + cols * (tw + pad) + 2 * pad
    row_h = label_h + th + pad
    sheet = Image.new("RGB", (sheet_w, pad + len(clips) * row_h), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r, clip in enumerate(clips):
        idx = _pick(clip.num_frames, k)
        imgs = _to_uint8(clip.images[idx])
        dep = colorize_depth(clip.depth[idx], clip.valid[idx], cmap)
        val = (clip.valid[idx].cpu().numpy().astype(np.uint8) * 255)[..., None].repeat(3, -1)
        y0 = pad + r * row_h
        name = f"{clip.meta.get('sequence', f'clip {r}')}  frames {clip.frame_ids[idx].tolist()}  (rgb | depth | valid)"
        draw.text((pad, y0), name, fill=(230, 230, 230))
        for group, tiles in enumerate((imgs, dep, val)):
            for j, tile in enumerate(tiles):
                im = Image.fromarray(np.ascontiguousarray(tile)).resize((clip.hw[1] * scale, clip.hw[0] * scale),
                                                                        Image.NEAREST)
                x = pad + (group * k + j) * (tw + pad) + group * pad
                sheet.paste(im, (x, y0 + label_h))
    return sheet


def _clips_from(items, max_videos: int, frames_per_row: int) -> list[Clip]:
    if isinstance(items, Clip):
        return [items]
    if isinstance(items, VideoDataset):
        clips = []
        for vid in items.videos()[:max_videos]:
            n = items.num_frames(vid)
            clips.append(items.load(vid, _pick(n, max(frames_per_row, 1))))
        return clips
    clips = list(items)[:max_videos]
    for c in clips:
        if not isinstance(c, Clip):
            raise TypeError(f"write_preview: expected Clips, a Clip or a VideoDataset, got {type(c).__name__}")
    return clips


def write_preview(
    items: Clip | Iterable[Clip] | VideoDataset,
    out_dir: str | Path,
    frames_per_row: int = 4,
    max_videos: int = 8,
    max_points: int = 200_000,
    cloud_frames: int = 16,
    cmap: str = "turbo",
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``contact_sheet.png`` (up to ``max_videos`` rows) and ``pointcloud.ply`` (first video).

    A dataset contributes ``frames_per_row`` evenly spaced frames per video to
    the sheet; the point cloud of the first video gathers up to ``cloud_frames``
    evenly spaced frames' valid world points, randomly subsampled (``seed``) to
    ``max_points``. Returns ``{"contact_sheet": path, "pointcloud": path}``.
    """
    out_dir = Path(out_dir)
    clips = _clips_from(items, max_videos, frames_per_row)
    if not clips:
        raise ValueError("write_preview: nothing to preview (no clips / empty dataset)")
    sheet = contact_sheet(clips, frames_per_row=frames_per_row, cmap=cmap)
    sheet_path = out_dir / "contact_sheet.png"
    with atomic_path(sheet_path) as tmp:
        sheet.save(tmp, format="PNG")

    first = clips[0]
    if isinstance(items, VideoDataset):
        vid = items.videos()[0]
        first = items.load(vid, _pick(items.num_frames(vid), cloud_frames))
    else:
        first = first.select(_pick(first.num_frames, cloud_frames))
    pts = first.world_points()[first.valid]
    cols = torch.from_numpy(_to_uint8(first.images)).reshape(-1, 3)[first.valid.reshape(-1)]
    if len(pts) > max_points:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(pts), generator=g)[:max_points].sort().values
        pts, cols = pts[keep], cols[keep]
    ply_path = write_ply(out_dir / "pointcloud.ply", pts.float(), cols)
    return {"contact_sheet": sheet_path, "pointcloud": ply_path}
