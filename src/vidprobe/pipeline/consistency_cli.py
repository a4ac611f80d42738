"""`vidprobe consistency`: cross-view feature consistency (:mod:`vidprobe.pipeline.consistency`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def consistency(
    features: Path = typer.Option(..., "--features", "-f", help="Feature store directory."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset with ground truth."),
    layer: int | None = typer.Option(None, help="Layer (default: the store's only layer)."),
    timestep: int | None = typer.Option(None, help="Timestep (default: the store's only one)."),
    labels: Path | None = typer.Option(None, help="Labels directory for the ground truth."),
    split: str = typer.Option("test", help="Dataset split."),
    pairs: int | None = typer.Option(None, help="Ordered view pairs per video (fixed-seed subset; default: all)."),
    frames: int = typer.Option(4, help="Views per video (the probe's fixed-seed evaluation frames)."),
    max_frame: int = typer.Option(76, help="Views are drawn from the first MAX_FRAME frames."),
    max_videos: int | None = typer.Option(None, help="Use at most this many videos."),
    max_queries: int = typer.Option(500, help="Query pixels per view pair."),
    db: Path | None = typer.Option(None, help="Results DB to record the scores in (run kind 'consistency')."),
    out: Path | None = typer.Option(None, help="JSON file for the scores (aggregate and per video)."),
    progress: bool = typer.Option(True, help="Progress bar."),
) -> None:
    """Cross-view feature consistency: nearest-neighbour correspondence error of GT reprojections."""
    from vidprobe.atomic import atomic_write_text
    from vidprobe.pipeline.consistency import consistency_scores, record_consistency

    opts = {"max_queries": max_queries, "max_videos": max_videos, "frames": frames, "max_frame": max_frame, "pairs": pairs}
    try:
        res = consistency_scores(features, dataset, layer, timestep, split, str(labels) if labels else None,
                                 progress=progress, **opts)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    failed = f", {len(res['failed'])} skipped" if res["failed"] else ""
    typer.echo(f"{res['backbone']} layer {res['layer']} timestep {res['timestep']}: {res['videos']} videos{failed}")
    for k, v in res["metrics"].items():
        typer.echo(f"{k:>22}: {v:.4f}")
    for vid, why in res["failed"].items():
        typer.echo(f"  skipped {vid}: {why}")
    if out:
        atomic_write_text(out, json.dumps(res, indent=1, default=str))
    if db:
        rid = record_consistency(db, features, dataset, layer, timestep, split, str(labels) if labels else None,
                                 progress=False, result=res, **opts)
        typer.echo(f"recorded as run {rid} in {db}")
