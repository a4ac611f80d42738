"""`vidprobe label`: pseudo ground truth (VGGT-1B) for every video of a dataset.

The reference trains and evaluates on VGGT-1B pseudo-labels, not on the
datasets' own geometry: VGGT runs once on all frames of each video's window
(default the first 150 frames) and its points (by default the depth map
unprojected with the predicted cameras, as the release's ``pointmaps``), depth,
depth confidence and cameras are written as one labels file per video
(:mod:`vidprobe.data.labels`), at ``OUT/<video id>.safetensors`` -- the layout
``open_dataset(root, labels_dir=OUT)`` reads for CO3D
(``<category>/<sequence>``) and DL3DV (``<scene>``). Labels are at VGGT's
input resolution (518 wide; 518x294 for 16:9 frames); readers resize images to
the labels' size.

The job resumes (a video whose labels file exists and opens is skipped),
skips and counts broken videos, and writes ``OUT/label_summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from vidprobe import skips_cli

app = typer.Typer()

log = logging.getLogger("vidprobe.label")

LABELERS = ("vggt",)


@dataclass
class LabelSummary:
    labelled: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"labelled {len(self.labelled)}, already done {len(self.skipped_existing)}, "
                 f"failed {len(self.failed)} ({self.seconds:.1f} s)"]
        lines += [f"  failed {k}: {v}" for k, v in sorted(self.failed.items())]
        return "\n".join(lines)


def labels_path(out_dir: str | Path, video_id: str) -> Path:
    """``out_dir/<video_id>.safetensors``; refuses ids that would leave ``out_dir``."""
    parts = Path(video_id).parts
    if not parts or Path(video_id).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"video id {video_id!r} cannot name a labels file under {out_dir}")
    return Path(out_dir).joinpath(*parts[:-1], parts[-1] + ".safetensors")


def _already_done(path: Path) -> bool:
    from vidprobe.data.labels import LabelsError, LabelsFile

    if not path.is_file():
        return False
    try:
        LabelsFile(path)
    except LabelsError as e:
        log.warning("%s: unreadable labels file, labelling again (%s)", path, e)
        return False
    return True


def label_dataset(
    dataset: Any,
    out_dir: str | Path,
    labeler: Callable[[Any], dict],
    window: int | None = 150,
    videos: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> LabelSummary:
    """Label the first ``window`` frames (all when ``None``) of each video of a :class:`VideoDataset`.

    ``labeler(video [T,3,H,W]) -> {points, depth, confidence, valid, intrinsics,
    extrinsics}``; ``frame_ids`` are the frame positions ``0..T-1``. A video
    that raises is logged, counted in ``failed`` and skipped.
    """
    import torch
    from tqdm import tqdm

    from vidprobe.data.labels import write_labels

    if window is not None and window < 1:
        raise ValueError(f"label: window must be >= 1, got {window}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = list(dataset.videos() if videos is None else videos)
    summary = LabelSummary()
    t0 = time.perf_counter()
    bar = tqdm(ids, desc="label", unit="video", disable=not progress)
    for vid in bar:
        bar.set_postfix_str(str(vid)[-40:])
        try:
            path = labels_path(out, vid)
            if not overwrite and _already_done(path):
                summary.skipped_existing.append(vid)
                continue
            n = int(dataset.num_frames(vid))
            if n < 1:
                raise ValueError("video has no frames")
            frames = list(range(n if window is None else min(n, window)))
            video = dataset.load_images(vid, frames)
            lab = labeler(video)
            path.parent.mkdir(parents=True, exist_ok=True)
            m = dict(meta or {})
            m.update(video_id=vid, window=len(frames), source_hw=list(video.shape[-2:]))
            write_labels(path, frame_ids=torch.tensor(frames, dtype=torch.long), meta=m, **lab)
        except Exception as e:  # noqa: BLE001 - a long job skips and counts a broken video
            summary.failed[vid] = f"{type(e).__name__}: {e}"
            log.warning("label: skipped %s: %s: %s", vid, type(e).__name__, e)
            continue
        summary.labelled.append(vid)
    summary.seconds = time.perf_counter() - t0
    return summary


def write_summary(out_dir: str | Path, summary: LabelSummary, extra: dict[str, Any] | None = None) -> Path:
    from vidprobe.data.labels import atomic_path

    path = Path(out_dir) / "label_summary.json"
    doc = dict(extra or {})
    doc.update(asdict(summary))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=str))
    return path


def build_labeler(name: str, **kw: Any):
    if name == "vggt":
        from vidprobe.backbones.vggt import build_labeler as build_vggt

        return build_vggt(**kw)
    raise ValueError(f"unknown labeler {name!r}; known: {', '.join(LABELERS)}")


@app.command()
def label(
    dataset: Path = typer.Argument(..., help="Dataset directory (any format `vidprobe` reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Labels directory (created; reused to resume)."),
    labeler: str = typer.Option("vggt", "--labeler", help=f"Pseudo-label model: {', '.join(LABELERS)}."),
    window: int = typer.Option(150, "--window", min=1, help="Label the first K frames of each video (all in one pass)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    dtype: Optional[str] = typer.Option(None, help="Autocast dtype of the aggregator on CUDA: bf16 (default), fp16 or fp32."),
    model_id: str = typer.Option("facebook/VGGT-1B", "--model-id", help="Hub id or local path (dir or file) of the weights."),
    revision: Optional[str] = typer.Option(None, help="Hub revision of the weights."),
    points_from: str = typer.Option("depth", "--points-from",
                                    help="depth (depth unprojected with the predicted cameras: the release's pointmaps) "
                                         "or point_head (VGGT's point-head map)."),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny random-weight model (tests, dry runs; no download)."),
    split: Optional[str] = typer.Option(None, help="Only this split (train/test); default all videos."),
    max_videos: Optional[int] = typer.Option(None, "--max-videos", min=1, help="Only the first K videos (sorted ids)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Label again videos that already have a labels file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Write VGGT pseudo ground truth (points, depth, depth confidence, cameras) for every video of DATASET.

    Broken videos are skipped and counted: the command then exits 1 unless --allow-skips.

    Examples (the first with a tiny random VGGT: the real labeler's code path on the built-in data, noise labels):
      vidprobe label data/synth --out data/synth_labels --tiny
      vidprobe label /data/co3d_ref --out /data/co3d_labels --device cuda
    """
    from vidprobe.data.base import DatasetError
    from vidprobe.data.open import open_dataset

    if labeler not in LABELERS:
        raise typer.BadParameter(f"unknown labeler {labeler!r}; known: {', '.join(LABELERS)}", param_hint="--labeler")
    if points_from not in ("point_head", "depth"):
        raise typer.BadParameter("expected point_head or depth", param_hint="--points-from")
    try:
        ds = open_dataset(dataset)
        ids = sorted(ds.videos(split))
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if max_videos is not None:
        ids = ids[:max_videos]
    lab = build_labeler(labeler, model_id=model_id, revision=revision, device=device, dtype=dtype, tiny=tiny,
                        points_from=points_from)
    meta = dict(lab.meta(), dataset=str(dataset))
    summary = label_dataset(ds, out, lab, window=window, videos=ids, overwrite=overwrite, progress=not quiet, meta=meta)
    path = write_summary(out, summary, {"dataset": str(dataset), "labeler": labeler, "window": window, "meta": meta})
    typer.echo(summary.text())
    typer.echo(f"summary: {path}")
    skips_cli.finish(summary.failed, allow_skips)
    if ids and not summary.labelled and not summary.skipped_existing:
        raise typer.Exit(1)
