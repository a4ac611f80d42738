"""`vidprobe prepare ...`: render the built-in synthetic data, convert CO3Dv2, check any dataset.

``app`` is the `vidprobe prepare` group (:mod:`vidprobe.cli` adds it under that name): `prepare synthetic`,
`prepare co3d` (the reference CO3Dv2 preprocessing) and `prepare check` (scan any dataset), in that order.
A new preparation command is one more ``@app.command("<name>")`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vidprobe import skips_cli

app = typer.Typer(
    help="Prepare a dataset for extraction and probing: render the built-in synthetic data "
    "or convert a downloaded benchmark into frames + ground-truth labels.",
    no_args_is_help=True,
)


@app.command("synthetic")
def prepare_synthetic(
    out: Path = typer.Argument(..., help="Output directory (created; an interrupted run resumes here)."),
    videos: int = typer.Option(12, "--videos", "-n", min=1, help="Number of videos to render."),
    frames: int = typer.Option(81, "--frames", min=1, help="Frames per video."),
    height: int = typer.Option(64, "--height", min=1, help="Frame height in pixels."),
    width: int = typer.Option(112, "--width", min=1, help="Frame width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Video i uses seed SEED+i; also seeds the train/test split."),
    families: str = typer.Option(
        "orbit,walk", "--families",
        help="Comma-separated scene families, used in turn: 'orbit' (CO3D-like object orbit), "
        "'walk' (DL3DV-like room walk-through).",
    ),
    fov: float = typer.Option(60.0, "--fov", help="Horizontal field of view in degrees."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=1.0, help="Share of videos held out as 'test'."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Render the built-in synthetic dataset (exact depth, points and cameras; no downloads).

    Writes OUT/dataset.json, OUT/<video>/frames/*.png and OUT/<video>/labels.safetensors.

    Example:  vidprobe prepare synthetic data/synth --videos 8 --frames 33
    """
    from vidprobe.data.native import NativeDataset
    from vidprobe.data.synthetic import write_synthetic_dataset

    fams = tuple(f.strip() for f in families.split(",") if f.strip())
    try:
        root = write_synthetic_dataset(out, videos, families=fams, num_frames=frames, hw=(height, width),
                                       seed=seed, test_fraction=test_fraction, progress=progress, fov_deg=fov)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    ds = NativeDataset(root)
    typer.echo(f"wrote {len(ds.videos())} videos ({len(ds.videos('train'))} train, {len(ds.videos('test'))} test) to {root}")


@app.command("co3d")
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
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Crop CO3Dv2 sequences 16:9 around the union of object masks, reject truncated ones, resize, keep the first frames.

    Writes DST/<category>/... and DST/preprocess_report.json (kept, rejected with reasons, truncation, crops).
    Sequences rejected by the rules (too short, truncated, no mask) are the protocol's; broken sequences and
    categories whose annotations cannot be read are skipped and counted: exit 1 unless --allow-skips.
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
    broken = {v: r for v, r in rep.rejected.items() if r.startswith("error:")}
    broken.update({f"{c}/*": r for c, r in rep.skipped_categories.items() if not r.startswith("already in ")})
    skips_cli.finish(broken, allow_skips, what="sequences")


@app.command("check")
def check(
    dataset: Path = typer.Argument(..., help="Any supported dataset root (vidprobe-native, CO3Dv2, DL3DV)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels directory (`vidprobe label`) to take the "
                                          "ground truth from, as the config key 'labels' (any dataset format)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split (train/test)."),
    deep: bool = typer.Option(False, "--deep", help="Read every frame, not only the first (or first and last), and "
                              "check that all frames of a video have one size."),
) -> None:
    """Detect a dataset's format and check every video opens; print skipped videos with reasons and a count.

    Examples:
      vidprobe prepare check data/synth --deep
      vidprobe prepare check data/synth --labels data/synth_labels
    """
    from vidprobe.data.base import DatasetError
    from vidprobe.data.open import detect_format, open_dataset

    try:
        fmt = detect_format(dataset)
        ds = open_dataset(dataset, labels_dir=labels)
        rep = ds.scan(split, deep=deep)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"{dataset}: {fmt}")
    typer.echo(rep.summary())
    if not rep.ok:
        raise typer.Exit(1)
