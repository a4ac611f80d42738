"""`vidprobe sweep CONFIG`: a resumable grid of probing experiments (the library: ``vidprobe.pipeline.sweep``)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Sweep YAML (see configs/paper/ and configs/studies/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set dataset=/data/co3d_ref --set train.epochs=10"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (extractions and cells, [done] ones marked) and exit."),
    table: bool = typer.Option(False, "--table", help="Only print the seed-aggregated table of the sweep's DB."),
    progress: bool = typer.Option(True, help="Progress bars."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default). 1 avoids the thread spinning that "
                                "slows tiny CPU models many times on a busy machine."),
) -> None:
    """Run a grid of backbones x layers x timesteps x probe presets x seeds.

    Extracts each backbone once (all layers and timesteps in one pass per
    video), trains and evaluates every cell into the results DB, skips cells
    already there, resumes interrupted ones, and reports failed cells without
    stopping (exit status 1 when any cell failed).
    """
    from vidprobe.pipeline.sweep import SweepError, format_sweep_table, load_sweep, run_sweep, sweep_table

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    try:
        cfg = load_sweep(config, set_)
        db_path = Path(cfg.get("db") or Path(cfg["out"]) / "results.db")
        if table:
            if not db_path.exists():
                raise SweepError(f"no results DB at {db_path} yet")
            typer.echo(format_sweep_table(sweep_table(db_path)))
            return
        s = run_sweep(cfg, dry_run=dry_run, progress=progress, echo=typer.echo)
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not dry_run and (s.done or s.skipped) and db_path.exists():
        typer.echo(format_sweep_table(sweep_table(db_path)))
    if s.failed:
        raise typer.Exit(1)
