"""`vidprobe sweep CONFIG`: a resumable grid of probing experiments (the library: ``vidprobe.pipeline.sweep``)."""

from __future__ import annotations

from pathlib import Path

import typer

from vidprobe.pipeline import launcher_cli

app = typer.Typer()


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Sweep YAML (see configs/paper/ and configs/studies/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set dataset=/data/co3d_ref --set train.epochs=10"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (extractions and cells, \\[done] ones marked) and exit."),
    table: bool = typer.Option(False, "--table", help="Only print the seed-aggregated table of the sweep's DB."),
    progress: bool = typer.Option(True, help="Progress bars."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default). 1 avoids the thread spinning that "
                                "slows tiny CPU models many times on a busy machine."),
    launcher: str | None = launcher_cli.LAUNCHER, wait: bool = launcher_cli.WAIT,
    partition: str | None = launcher_cli.PARTITION, gpus: int | None = launcher_cli.GPUS,
    cpus: int | None = launcher_cli.CPUS, time_limit: str | None = launcher_cli.TIME,
    account: str | None = launcher_cli.ACCOUNT, qos: str | None = launcher_cli.QOS, mem: str | None = launcher_cli.MEM,
    sbatch: list[str] | None = launcher_cli.SBATCH, max_parallel: int | None = launcher_cli.MAX_PARALLEL,
    log_dir: Path | None = launcher_cli.LOG_DIR,
    plan_check: bool = typer.Option(True, help="Refuse to start when `vidprobe plan` says the store's disk or the "
                                    "device's memory is too small (--no-plan-check starts anyway)."),
) -> None:
    """Run a grid of backbones x layers x timesteps x probe presets x seeds.

    Extracts each backbone once (all layers and timesteps in one pass per
    video), trains and evaluates every cell into the results DB, skips cells
    already there, resumes interrupted ones, and reports failed cells without
    stopping (exit status 1 when any cell failed). With --launcher slurm (or
    a launcher: section) each cell to do is a job; flags override the section.

    Examples (the first prints the plan of one published row, the second runs it):
      vidprobe sweep configs/paper/wan2.1-t2v-14b_co3d.yaml --dry-run
      vidprobe sweep configs/paper/wan2.1-t2v-14b_co3d.yaml --set dataset=/data/co3d_ref --set labels=/data/co3d_labels
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
        lcfg = launcher_cli.settings(cfg.get("launcher"), launcher=launcher, partition=partition, gpus=gpus, cpus=cpus,
                                     time=time_limit, account=account, qos=qos, mem=mem, sbatch=sbatch,
                                     max_parallel=max_parallel, log_dir=log_dir, where=str(config))
        if lcfg.backend != "none" and not dry_run:  # each cell to do is a job; the DB says what is done
            rc = launcher_cli.sweep_jobs(cfg, lcfg, wait)
            if wait and db_path.exists():
                typer.echo(format_sweep_table(sweep_table(db_path)))
            raise typer.Exit(rc)
        if plan_check and not dry_run:
            from vidprobe.pipeline.plan_cli import check_or_refuse

            check_or_refuse(cfg, config)  # exits 2, with the plan's numbers, when the sweep cannot fit
        s = run_sweep(cfg, dry_run=dry_run, progress=progress, echo=typer.echo)
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not dry_run and (s.done or s.skipped) and db_path.exists():
        typer.echo(format_sweep_table(sweep_table(db_path)))
    if s.failed:
        raise typer.Exit(1)
