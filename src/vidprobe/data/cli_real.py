"""`vidprobe prepare co3d` (the reference CO3Dv2 preprocessing) and `vidprobe prepare check` (scan any dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vidprobe.data.cli import prepare_app


@prepare_app.command("co3d")
def prepare_co3d(
    src: Path = typer.Argument(..., help="CO3Dv2 root (the folder holding <category>/frame_annotations.jgz)."),
    dst: Path = typer.Argument(..., help="Output root; written in the same CO3D layout."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated categories (default: all)."),
    height: int = typer.Option(540, "--height", min=1, help="Output frame height."),
    width: int = typer.Option(960, "--width", min=1, help="Output frame width (the crop has the aspect width:height)."),
    frames: int = typer.Option(81, "--frames", min=1, help="Keep the first N frames of each sequence."),
    min_frames: Optional[int] = typer.Option(None, "--min-frames", min=1, help="Reject shorter sequences (default: --frames)."),
    max_truncation: float = typer.Option(0.25, "--max-truncation", min=0.0, max=1.0,
                                         help="Reject when the mean fraction of object mask cut off by the crop exceeds this."),
    mask_threshold: float = typer.Option(0.5, "--mask-threshold", min=0.0, max=1.0, help="Foreground probability threshold."),
    jpeg_quality: int = typer.Option(95, "--jpeg-quality", min=1, max=100),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo categories already present in DST."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Crop CO3Dv2 sequences 16:9 around the union of object masks, reject truncated ones, resize, keep the first frames.

    Writes DST/<category>/... and DST/preprocess_report.json (kept, rejected with reasons, truncation, crops).
    """
    from vidprobe.data.base import DatasetError
    from vidprobe.data.co3d import preprocess_co3d

    cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    try:
        rep = preprocess_co3d(src, dst, categories=cats, out_hw=(height, width), num_frames=frames, min_frames=min_frames,
                              max_truncation=max_truncation, mask_threshold=mask_threshold, jpeg_quality=jpeg_quality,
                              overwrite=overwrite, progress=progress)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(rep.summary())
    typer.echo(f"report: {Path(dst) / 'preprocess_report.json'}")


@prepare_app.command("check")
def check(
    dataset: Path = typer.Argument(..., help="Any supported dataset root (vidprobe-native, CO3Dv2, DL3DV)."),
    labels_dir: Optional[Path] = typer.Option(None, "--labels-dir", help="Ground truth from labels files (CO3D, DL3DV)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split (train/test)."),
    deep: bool = typer.Option(False, "--deep", help="Read every frame, not only the first (CO3D, DL3DV)."),
) -> None:
    """Detect a dataset's format and check every video opens; print skipped videos with reasons and a count."""
    from vidprobe.data.base import DatasetError
    from vidprobe.data.open import detect_format, open_dataset

    try:
        fmt = detect_format(dataset)
        ds = open_dataset(dataset, labels_dir=labels_dir)
        rep = ds.scan(split, deep=deep) if fmt in ("co3d", "dl3dv") else ds.scan(split)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"{dataset}: {fmt}")
    typer.echo(rep.summary())
    if not rep.ok:
        raise typer.Exit(1)
