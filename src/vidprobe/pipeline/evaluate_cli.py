"""`vidprobe evaluate RUN_DIR`: score a trained probe (:mod:`vidprobe.pipeline.evaluate`)."""

from __future__ import annotations

from pathlib import Path

import typer

from vidprobe import skips_cli
from vidprobe.data import cli as data_cli

app = typer.Typer()


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def check_db(db: Path) -> None:
    """Before any evaluation: ``--db`` must be a usable results database (opened, its schema checked), or a new
    file whose folder can be made; otherwise exit 2 with a message naming it."""
    from vidprobe.results import ResultsDB, ResultsDBError

    for p in db.parents:
        if p.exists():
            if not p.is_dir():
                _fail(ValueError(f"--db {db}: lies under {p}, a regular file, not a directory"))
            break
    if not db.exists():
        return  # created when the first result is recorded
    try:
        ResultsDB(db).close()
    except (ResultsDBError, OSError) as e:
        _fail(ValueError(f"--db {db}: {e}"))


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory written by `vidprobe train`."),
    which: str = typer.Option("last", "--which", help="Checkpoint to score: last, best or both."),
    split: str | None = typer.Option(None, "--split", help="Dataset split (default: the config's eval_split)."),
    compat: str | None = typer.Option(None, "--compat", help="Metric definitions: 'clean' (gauge-invariant cameras, "
                                      "valid pixels, failed clips scored worst) or 'reference' (the study release's "
                                      "numbers, for comparing with its table). Default: the run's own compat."),
    db: Path | None = typer.Option(None, "--db", help="Results database (SQLite) to record the run and metrics in."),
    save_clips: int = typer.Option(3, "--save-clips", min=0, help="Save predictions, GT and point clouds of the first K clips."),
    allow_failed_clips: bool = typer.Option(False, "--allow-failed-clips", help="Exit 0 even when some clips had "
                                            "NaN/Inf predictions (they are scored as failures either way)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    allow_data_mismatch: bool = data_cli.ALLOW_DATA_MISMATCH,
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Score a trained probe: point, depth and camera metrics with bootstrap 95% intervals.

    Writes RUN_DIR/eval_<which>/metrics.json (per clip and aggregate), clips/*.safetensors and *.ply
    for the first clips, optionally a row per metric in the results database, and prints the table
    (Point Err is raw; the published table shows it x10). A clip whose prediction has a NaN/Inf is a
    failed clip: it is scored (clean: +inf errors, 0 accuracies), counted, and the command exits 1
    unless --allow-failed-clips. Features from other data than the dataset's are refused unless
    --allow-data-mismatch; videos of the split without features are left out (exit 1 unless --allow-skips).

    Example:  vidprobe evaluate runs/dinov2-small_Llast_Tnone --which both --db results.db
    """
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.pipeline.evaluate import (
        CHECKPOINT_CHOICES,
        EvalError,
        evaluate_run,
        format_table,
    )

    if which not in (*CHECKPOINT_CHOICES, "both"):
        _fail(EvalError(f"--which must be last, best or both, got {which!r}"))
    kinds = list(CHECKPOINT_CHOICES) if which == "both" else [which]
    if db is not None:
        check_db(db)
    results = []
    try:
        for k in kinds:
            results.append(evaluate_run(run_dir, which=k, split=split, compat=compat, db_path=db,
                                        save_clips=save_clips, progress=progress,
                                        allow_data_mismatch=allow_data_mismatch))
    except (EvalError, FeatureStoreError, FileNotFoundError) as e:
        _fail(e)
    except ValueError as e:
        _fail(e)
    typer.echo(format_table(results))
    failed = {r.which: r.failed_clips for r in results if r.failed_clips}
    if failed:
        for w, clips in failed.items():
            typer.echo(f"warning: {w}: {len(clips)} clip(s) had NaN/Inf predictions and were scored as failures: "
                       + ", ".join(f"{c} ({'/'.join(f)})" for c, f in list(clips.items())[:10])
                       + (" ..." if len(clips) > 10 else ""), err=True)
    skipped = {v: r for res in results for v, r in res.skipped.items()}
    if skipped:  # the count line last
        typer.echo(skips_cli.skip_line(skipped, allowed=allow_skips), err=True)
    if (failed and not allow_failed_clips) or (skipped and not allow_skips):
        raise typer.Exit(1)
