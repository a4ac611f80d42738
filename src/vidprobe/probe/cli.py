"""`vidprobe train CONFIG` and `vidprobe evaluate RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer

from vidprobe.cli import app


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML run config (see configs/); every field is documented in TrainConfig."),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override one config field, KEY=VALUE with a dotted key and a YAML value, "
        "e.g. --set optim.lr=3e-4 --set epochs=10. Repeatable."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint (exactly: same batches, "
                                "same final weights as an uninterrupted run)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a probe on frozen features (a run directory with logs and checkpoints).

    The run directory (config field 'out') gets config.yaml, run.json, log.jsonl + log.csv (one row per step),
    checkpoints/step_*/ (safetensors weights, optimizer and RNG state) and last/best pointers.
    Multi-GPU: launch with torchrun; batch_size is per process.

    Example:  vidprobe train configs/example.yaml --set epochs=2 --set out=runs/try
    """
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.probe.config import ProbeConfigError
    from vidprobe.probe.losses import LossConfigError, NonFiniteLossError
    from vidprobe.probe.train import ConfigError, load_config
    from vidprobe.probe.train import train as run_train

    try:
        cfg = load_config(config, set_ or [])
        res = run_train(cfg, resume=resume, progress=progress)
    except (ConfigError, ProbeConfigError, LossConfigError, FeatureStoreError, NonFiniteLossError, FileNotFoundError) as e:
        _fail(e)
    except ValueError as e:  # dataset / sampler errors name their file and field
        _fail(e)
    typer.echo(f"trained {res.steps} steps in {res.run_dir}: final loss {res.final_loss:.4f}"
               + (f", eval loss {res.eval_loss:.4f}" if res.eval_loss is not None else ""))
    typer.echo(f"last checkpoint: {res.last_checkpoint}")
    typer.echo(f"best checkpoint: {res.best_checkpoint}")


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
) -> None:
    """Score a trained probe: point, depth and camera metrics with bootstrap 95% intervals.

    Writes RUN_DIR/eval_<which>/metrics.json (per clip and aggregate), clips/*.safetensors and *.ply
    for the first clips, optionally a row per metric in the results database, and prints the table
    (Point Err is raw; the published table shows it x10). A clip whose prediction has a NaN/Inf is a
    failed clip: it is scored (clean: +inf errors, 0 accuracies), counted, and the command exits 1
    unless --allow-failed-clips.

    Example:  vidprobe evaluate runs/probe --which both --db results.db
    """
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.probe.evaluate import (
        CHECKPOINT_CHOICES,
        EvalError,
        evaluate_run,
        format_table,
    )

    if which not in (*CHECKPOINT_CHOICES, "both"):
        _fail(EvalError(f"--which must be last, best or both, got {which!r}"))
    kinds = list(CHECKPOINT_CHOICES) if which == "both" else [which]
    results = []
    try:
        for k in kinds:
            results.append(evaluate_run(run_dir, which=k, split=split, compat=compat, db_path=db,
                                        save_clips=save_clips, progress=progress))
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
        if not allow_failed_clips:
            raise typer.Exit(1)
