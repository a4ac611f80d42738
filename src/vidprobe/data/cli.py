"""`vidprobe preview DATASET`: a contact sheet and a point cloud of a prepared dataset (:mod:`vidprobe.data.preview`).

The `vidprobe prepare ...` group is :mod:`vidprobe.data.prepare_cli`.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()

#: ``--allow-data-mismatch`` of train, evaluate and consistency: the data fingerprint check of
#: :mod:`vidprobe.data.fingerprint` warns instead of refusing
ALLOW_DATA_MISMATCH = typer.Option(False, "--allow-data-mismatch", help="Use features whose recorded data fingerprint "
                                   "(frame count, ids, size, content) differs from the dataset's videos (warned about, "
                                   "not refused).")


@app.command("preview")
def preview(
    dataset: Path = typer.Argument(..., help="A prepared dataset directory (vidprobe-native layout, with dataset.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for contact_sheet.png and pointcloud.ply."),
    videos: int = typer.Option(8, "--videos", "-n", min=1, help="Rows (videos) in the contact sheet."),
    frames: int = typer.Option(4, "--frames", min=1, help="Frames per row."),
    points: int = typer.Option(200_000, "--points", min=1, help="Maximum number of points in the PLY."),
    cmap: str = typer.Option("turbo", "--cmap", help="Matplotlib colormap for depth."),
) -> None:
    """Write a contact sheet (frames | coloured depth | valid mask per video) and a point cloud of the first video.

    Example:  vidprobe preview data/synth --out preview/
    """
    from vidprobe.data.base import DatasetError
    from vidprobe.data.native import NativeDataset
    from vidprobe.data.preview import write_preview

    try:
        ds = NativeDataset(dataset)
        paths = write_preview(ds, out, frames_per_row=frames, max_videos=videos, max_points=points, cmap=cmap)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    for name, p in paths.items():
        typer.echo(f"{name}: {p}")
