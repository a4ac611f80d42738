"""`vidprobe consistency`: cross-view feature consistency (:mod:`vidprobe.pipeline.consistency`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vidprobe import skips_cli
from vidprobe.data import cli as data_cli

app = typer.Typer()

#: the settings the shared run-input checks name (ConfigError.path) -> this command's flags
FLAGS = {"features": "--features", "dataset": "--dataset", "labels": "--labels", "layer": "--layer",
         "timestep": "--timestep"}


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
    allow_data_mismatch: bool = data_cli.ALLOW_DATA_MISMATCH,
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Cross-view feature consistency: nearest-neighbour correspondence error of GT reprojections.

    Features from other data than the dataset's are refused unless --allow-data-mismatch; videos that fail
    or have no features are skipped and counted (exit 1 unless --allow-skips).

    Example:  vidprobe consistency -f feats/synth_dinov2 -d data/synth --db results.db
    """
    from vidprobe.atomic import atomic_write_text
    from vidprobe.pipeline.consistency import consistency_scores, record_consistency

    opts = {"max_queries": max_queries, "max_videos": max_videos, "frames": frames, "max_frame": max_frame, "pairs": pairs}
    try:
        res = consistency_scores(features, dataset, layer, timestep, split, str(labels) if labels else None,
                                 progress=progress, allow_data_mismatch=allow_data_mismatch, **opts)
    except (ValueError, FileNotFoundError) as e:
        flag = FLAGS.get(getattr(e, "path", ""))  # a ConfigError of the checks shared with training: name our flag
        typer.echo(f"error: {flag + ': ' if flag else ''}{e}", err=True)
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
    from vidprobe.probe.data import NO_FEATURES

    skips_cli.finish({**dict.fromkeys(res.get("missing", []), NO_FEATURES), **res["failed"]}, allow_skips)
