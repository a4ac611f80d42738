"""The launcher flags of `vidprobe extract` and `vidprobe sweep`, and how a submission is reported.

A cli module without commands of its own: both commands take these options (the same ``typer.Option``
objects) and call :func:`settings`, then :func:`extract_jobs` / :func:`sweep_jobs`. The library is
:mod:`vidprobe.pipeline.launcher` (executors, the submitted jobs, requeueing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

PANEL = "Launcher (submitit)"

LAUNCHER: Any = typer.Option(None, "--launcher", rich_help_panel=PANEL, help="Submit jobs through submitit: slurm, or "
                             "local (processes on this machine); none runs here. Default: the sweep config's "
                             "launcher.backend, else none.")
ARRAY: Any = typer.Option(None, "--array", min=1, rich_help_panel=PANEL,
                          help="N tasks (one Slurm job array): task i extracts shard i/N. Default 1.")
WAIT: Any = typer.Option(False, "--wait", rich_help_panel=PANEL,
                         help="Wait for the jobs, report how each ended, exit 1 when any failed.")
PARTITION: Any = typer.Option(None, "--partition", rich_help_panel=PANEL, help="Slurm partition.")
GPUS: Any = typer.Option(None, "--gpus", rich_help_panel=PANEL, help="GPUs per job (a sweep cell with more than 1 "
                         "trains under torchrun, one process per GPU). Default 0.")
CPUS: Any = typer.Option(None, "--cpus", rich_help_panel=PANEL, help="CPUs per job (and torch threads).")
TIME: Any = typer.Option(None, "--time", rich_help_panel=PANEL, help="Time limit per job: minutes or [D-]H:MM:SS "
                         "(default 4:00:00); a job past it is checkpointed and requeued.")
ACCOUNT: Any = typer.Option(None, "--account", rich_help_panel=PANEL, help="Slurm account.")
QOS: Any = typer.Option(None, "--qos", rich_help_panel=PANEL, help="Slurm quality of service.")
MEM: Any = typer.Option(None, "--mem", rich_help_panel=PANEL, help="Memory per job, e.g. 64G.")
SBATCH: Any = typer.Option(None, "--sbatch", rich_help_panel=PANEL, help="KEY=VALUE: an extra sbatch option "
                           "(repeatable), e.g. --sbatch constraint=a100 --sbatch exclude=node12.")
MAX_PARALLEL: Any = typer.Option(None, "--max-parallel", rich_help_panel=PANEL,
                                 help="Array tasks running at once (Slurm).")
LOG_DIR: Any = typer.Option(None, "--log-dir", rich_help_panel=PANEL, help="Where job pickles and logs go (default: "
                            "OUT/.jobs for extract, the sweep's OUT/jobs).")


def _sbatch(items: list[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--sbatch")
        value: Any = True if not sep else text
        if sep:
            try:
                parsed = yaml.safe_load(text)
                value = parsed if isinstance(parsed, (bool, int, float)) else text
            except yaml.YAMLError:
                pass
        out[key.strip()] = value
    return out


def settings(section: Any, *, launcher: Optional[str], partition: Optional[str], gpus: Optional[int],
             cpus: Optional[int], time: Optional[str], account: Optional[str], qos: Optional[str], mem: Optional[str],
             sbatch: Optional[list[str]], max_parallel: Optional[int], log_dir: Optional[Path], where: str = ""):
    """The resolved :class:`~vidprobe.pipeline.launcher_config.LauncherConfig`: ``section`` with the flags given."""
    from vidprobe.config import ConfigError
    from vidprobe.pipeline.launcher_config import resolve_launcher

    flags = {"backend": launcher, "partition": partition, "gpus": gpus, "cpus": cpus, "time": time, "account": account,
             "qos": qos, "mem": mem, "sbatch": _sbatch(sbatch), "max_parallel": max_parallel,
             "log_dir": None if log_dir is None else str(log_dir)}
    try:
        return resolve_launcher(section, flags, where)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


def extract_settings(shard: Optional[str], array: Optional[int], **flags: Any):
    """:func:`settings` of `vidprobe extract` (flags only), refusing --shard with a launcher and --array without."""
    lcfg = settings(None, **flags)
    if lcfg.backend != "none" and shard is not None:
        raise typer.BadParameter("with --launcher, task i of --array N extracts shard i/N", param_hint="--shard")
    if lcfg.backend == "none" and array is not None:
        raise typer.BadParameter("--array needs --launcher local or slurm", param_hint="--array")
    return lcfg


def _report(sub, wait: bool):
    """Print the job ids and logs; with ``wait``, wait and print how each job ended. Returns the outcomes or None."""
    typer.echo(f"submitted {len(sub.jobs)} job(s) to {sub.backend}; pickles and logs under {sub.folder}/<job id>/")
    for line in sub.describe():
        typer.echo(line)
    if not wait:
        typer.echo("not waiting (--wait waits); rerunning the same command later resumes and skips finished work")
        return None
    outcomes = sub.wait()
    for o in outcomes:
        if o.ok:
            typer.echo(f"job {o.job_id} ({o.label}): finished")
        else:
            tail = "\n".join(o.error.strip().splitlines()[-12:])
            typer.echo(f"job {o.job_id} ({o.label}) FAILED; log: {o.log}\n{tail}", err=True)
    return outcomes


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def extract_jobs(lcfg, array: Optional[int], wait: bool, allow_skips: bool, **task: Any) -> None:
    """Submit an extraction as ``array`` jobs (task i: shard i/array) and report; ends the command."""
    from vidprobe import skips_cli
    from vidprobe.features.extract import LOCKED
    from vidprobe.pipeline.launcher import ExtractTask, LauncherError, submit_extract

    try:
        sub = submit_extract(ExtractTask(**task), array or 1, lcfg)
    except (LauncherError, OSError) as e:
        _fail(e)
    outcomes = _report(sub, wait)
    if outcomes is None:
        return
    failed: dict[str, str] = {}
    for o in outcomes:
        if o.ok:
            typer.echo(o.result.format())
            failed.update({v: r for v, r in o.result.skipped.items() if r != LOCKED})
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)
    skips_cli.finish(failed, allow_skips)


def sweep_jobs(cfg: dict, lcfg, wait: bool) -> int:
    """Submit the sweep's cells not yet in the DB as jobs and report; the exit status (1: a job failed)."""
    from vidprobe.pipeline.launcher import LauncherError, submit_sweep

    try:
        sub = submit_sweep(cfg, lcfg)
    except (LauncherError, OSError) as e:
        _fail(e)
    n = len(sub.skipped) + len([lab for lab in sub.labels if not lab.startswith("consistency ")])
    typer.echo(f"[sweep] {n} cells: {len(sub.skipped)} already in the DB, {n - len(sub.skipped)} to run")
    if not sub.jobs:
        typer.echo("[sweep] nothing to submit: every cell is in the DB")
        return 0
    outcomes = _report(sub, wait)
    return 1 if outcomes is not None and not all(o.ok for o in outcomes) else 0
