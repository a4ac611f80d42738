"""`vidprobe prepare ...` (dataset preparation) and `vidprobe preview`.

Other dataset modules add their own preparation commands to ``prepare_app``
(``from vidprobe.data.cli import prepare_app`` then ``@prepare_app.command("co3d")``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vidprobe.cli import app

prepare_app = typer.Typer(
    help="Prepare a dataset for extraction and probing: render the built-in synthetic data "
    "or convert a downloaded benchmark into frames + ground-truth labels.",
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("synthetic")
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


@app.command("preview")
def preview(
    dataset: Path = typer.Argument(..., help="A prepared dataset directory (vidprobe-native layout, with dataset.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for contact_sheet.png and pointcloud.ply."),
    videos: int = typer.Option(8, "--videos", "-n", min=1, help="Rows (videos) in the contact sheet."),
    frames: int = typer.Option(4, "--frames", min=1, help="Frames per row."),
    points: int = typer.Option(200_000, "--points", min=1, help="Maximum number of points in the PLY."),
    cmap: str = typer.Option("turbo", "--cmap", help="Matplotlib colormap for depth."),
) -> None:
    """Write a contact sheet (frames | coloured depth | valid mask per video) and a point cloud of the first video."""
    from vidprobe.data.base import DatasetError
    from vidprobe.data.native import NativeDataset
    from vidprobe.report.preview import write_preview

    try:
        ds = NativeDataset(dataset)
        paths = write_preview(ds, out, frames_per_row=frames, max_videos=videos, max_points=points, cmap=cmap)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    for name, p in paths.items():
        typer.echo(f"{name}: {p}")
