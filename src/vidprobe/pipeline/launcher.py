"""Submit `extract` shards and sweep cells as jobs through submitit (Slurm, or processes on this machine).

One code path for both backends: :func:`make_executor` builds a submitit ``AutoExecutor`` for ``local``
(its LocalExecutor) or ``slurm`` from a :class:`~vidprobe.pipeline.launcher_config.LauncherConfig`; the jobs are
callable classes whose ``checkpoint()`` returns a ``submitit.helpers.DelayedSubmission`` of themselves, so a job
that is pre-empted or reaches its time limit (Slurm's USR2 signal) is requeued and runs again. Nothing is kept
in the job itself: the rerun relies on vidprobe's resumability, so no finished work is lost or done twice.

- :class:`ExtractTask`: task ``i`` of an array of ``n`` runs shard ``i/n`` of
  :func:`~vidprobe.features.extract.extract_dataset` (finished videos are skipped, per-video locks keep two
  processes off one video, an interrupted video's files are whole or absent).
- :class:`SweepCellJob`: one sweep cell (skipped when already in the results DB): its backbone's features (the
  cells of one backbone extract together, each taking the videos no other holds, then wait for the rest), then
  training (resumed from its last checkpoint; under torchrun when the job has more than one GPU), then the
  evaluation into the DB. :class:`SweepConsistencyJob` scores a backbone's feature consistency.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidprobe.pipeline.launcher_config import LauncherConfig

__all__ = ["ExtractTask", "LauncherError", "Outcome", "Submission", "SweepCellJob", "SweepConsistencyJob",
           "executor_parameters", "extract_entry", "make_executor", "submit_extract", "submit_sweep",
           "train_command"]

#: seconds between looks at videos another job is extracting
LOCK_POLL_S = 2.0


class LauncherError(RuntimeError):
    """The launcher cannot run (submitit missing, an impossible request); the message says what to do."""


def _submitit():
    try:
        import submitit
    except ImportError:
        raise LauncherError("--launcher needs submitit: pip install 'vidprobe[slurm]' (or pip install submitit)") from None
    return submitit


def _delayed(fn, *args, **kwargs):
    return _submitit().helpers.DelayedSubmission(fn, *args, **kwargs)


def _job_threads(n: int | None) -> None:
    """Torch threads = the job's CPUs when given (OMP_NUM_THREADS too, for torchrun's processes)."""
    if n:
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
        import torch

        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- executors


def executor_parameters(cfg: LauncherConfig, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor, ``update_parameters``) keywords of a submitit ``AutoExecutor`` for ``cfg``.

    Shared parameters (time, GPUs, CPUs) reach both backends; ``slurm_*`` ones only Slurm.
    """
    ctor = {"slurm_max_num_timeout": cfg.max_timeouts, "local_max_num_timeout": cfg.max_timeouts}
    params: dict[str, Any] = {"name": name, "timeout_min": cfg.minutes, "nodes": 1, "tasks_per_node": 1}
    if cfg.gpus:
        params["gpus_per_node"] = cfg.gpus
    if cfg.cpus:
        params["cpus_per_task"] = cfg.cpus
    slurm = {"partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "mem": cfg.mem,
             "array_parallelism": cfg.max_parallel,
             "additional_parameters": {str(k).replace("_", "-"): v for k, v in cfg.sbatch.items()} or None,
             "setup": list(cfg.setup) or None}
    params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
    if cfg.setup:
        params["local_setup"] = list(cfg.setup)
    return ctor, params


def make_executor(cfg: LauncherConfig, folder: str | Path, name: str):
    """A submitit executor writing each job's pickles and logs to ``folder/<job id>/``."""
    if cfg.backend not in ("local", "slurm"):
        raise LauncherError(f"launcher.backend {cfg.backend!r}: expected local or slurm to submit jobs")
    submitit = _submitit()
    ctor, params = executor_parameters(cfg, name)
    ex = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cfg.backend, **ctor)
    ex.update_parameters(**params)
    return ex


# ---------------------------------------------------------------------------------------------- submitted jobs


class _Requeueable:
    """submitit's checkpointing protocol: on pre-emption or timeout, submit this same job again."""

    requeues: int = 0

    def checkpoint(self, *args: Any, **kwargs: Any):
        return _delayed(replace(self, requeues=self.requeues + 1), *args, **kwargs)


@dataclass
class ExtractTask(_Requeueable):
    """``task(i, n)``: shard ``i/n`` of one extraction (the arguments of ``extract_dataset``)."""

    backbone: Any  # a registered name, or a Backbone instance (picklable)
    dataset: Any  # a dataset directory (opened in the job), or a picklable VideoDataset
    out: str
    layers: list[int]
    timesteps: list[int | None]
    dtype: str = "fp16"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    max_videos: int | None = None
    num_frames: int | None = None
    threads: int | None = None
    requeues: int = 0

    def __call__(self, index: int, count: int):
        from vidprobe.features.extract import extract_dataset

        _job_threads(self.threads)
        print(f"[extract] shard {index}/{count} of {self.out} (requeued {self.requeues}x)", flush=True)
        s = extract_dataset(self.backbone, self.dataset, self.out, self.layers, self.timesteps, dtype=self.dtype,
                            shard=(index, count), backbone_kwargs=self.backbone_kwargs, progress=False, split=self.split,
                            max_videos=self.max_videos, num_frames=self.num_frames)
        print(s.format(), flush=True)
        return s


def _sweep_db(cfg: dict) -> Path:
    return Path(cfg.get("db") or Path(cfg["out"]) / "results.db")


def _plans(cfg: dict) -> list[tuple[Any, Any, str]]:
    from vidprobe.pipeline.sweep import cell_train_config, plan_cells

    return [(c, *cell_train_config(cfg, c)) for c in plan_cells(cfg)]


def _done_cells(cfg: dict, plans) -> set[str]:
    from vidprobe.pipeline.sweep import find_done
    from vidprobe.results import ResultsDB

    db_path = _sweep_db(cfg)
    if not db_path.exists():
        return set()
    with ResultsDB(db_path) as db:
        return {c.name for c, _, h in plans if find_done(db, cfg, c, h) is not None}


def extract_entry(cfg: dict, entry, layers, timesteps, poll_s: float = LOCK_POLL_S):
    """Extract one backbone entry of a sweep, as ``run_sweep`` does; wait for videos other jobs are extracting."""
    from vidprobe.features.extract import LOCKED, extract_dataset
    from vidprobe.pipeline.sweep import entry_backbone

    ext = {k: v for k, v in (cfg.get("extract") or {}).items() if k != "num_frames"}
    feats = Path(cfg["out"]) / "features" / entry.features_key
    bb = entry_backbone(entry)
    while True:
        s = extract_dataset(bb, cfg["dataset"], feats, list(layers), list(timesteps), shard=(0, 1),
                            backbone_kwargs=entry.kwargs, num_frames=entry.num_frames, progress=False, **ext)
        busy = [v for v, r in s.skipped.items() if r == LOCKED]
        if not busy:
            return s
        print(f"[sweep] {entry.label}: waiting for {len(busy)} video(s) other jobs are extracting", flush=True)
        time.sleep(poll_s)


def train_command(config_path: str | Path, gpus: int, resume: bool) -> list[str]:
    """``torchrun`` (one process per GPU of this node) running ``vidprobe train`` on one cell's config."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "vidprobe.cli", "train", str(config_path), "--no-progress"] + (["--resume"] if resume else [])


def _train_under_torchrun(tc, resume: bool, gpus: int) -> None:
    import yaml

    from vidprobe.atomic import atomic_write_text

    with contextlib.ExitStack() as stack:
        try:  # the cell's config goes next to the job's logs
            folder = Path(_submitit().JobEnvironment().paths.folder)
        except Exception:  # noqa: BLE001 - not inside a submitit job (a direct call)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidprobe-cell-")))
        path = folder / f"{tc.name}.train.yaml"
        atomic_write_text(path, yaml.safe_dump(tc.to_dict(), sort_keys=False))
        proc = subprocess.Popen(train_command(path, gpus, resume))
        try:
            rc = proc.wait()
        finally:  # a pre-emption signal ends this process: end the training processes with it
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    if rc:
        raise RuntimeError(f"torchrun ({gpus} processes) training {tc.name} exited with status {rc}")


@dataclass
class SweepCellJob(_Requeueable):
    """One cell of a checked sweep config: features, training (resumed), evaluation into the DB."""

    cfg: dict
    cell: str
    layers: list[int]  # every layer and timestep its backbone extracts (the entry's cells to do)
    timesteps: list[int | None]
    gpus: int = 0
    threads: int | None = None
    requeues: int = 0

    def __call__(self) -> dict[str, Any]:
        from vidprobe.pipeline.evaluate import evaluate_run
        from vidprobe.probe import train as train_mod

        _job_threads(self.threads)
        plans = {p[0].name: p for p in _plans(self.cfg)}
        if self.cell not in plans:
            raise LauncherError(f"cell {self.cell} is not in the sweep config any more")
        c, tc, _ = plans[self.cell]
        if c.name in _done_cells(self.cfg, [plans[self.cell]]):
            return {"cell": c.name, "status": "already in the DB", "requeues": self.requeues}
        es = extract_entry(self.cfg, c.entry, self.layers, self.timesteps)
        resume = train_mod.find_checkpoint(Path(tc.out), "last") is not None
        print(f"[sweep] {c.name}: {'resuming' if resume else 'training'} -> {tc.out} (requeued {self.requeues}x)",
              flush=True)
        if self.gpus > 1:
            _train_under_torchrun(tc, resume, self.gpus)
        else:
            train_mod.train(tc, resume=resume, progress=False)
        res = evaluate_run(tc.out, which="last", compat=self.cfg.get("compat", "clean"), db_path=_sweep_db(self.cfg),
                           progress=False)
        if res.failed_clips:
            raise RuntimeError(f"{c.name}: {len(res.failed_clips)} evaluation clip(s) with non-finite predictions "
                               "(diverged probe); see metrics.json")
        return {"cell": c.name, "status": "done", "resumed": resume, "requeues": self.requeues,
                "videos_skipped": len(es.skipped)}


@dataclass
class SweepConsistencyJob(_Requeueable):
    """The feature-consistency scores of one backbone entry (``consistency:`` of the sweep), after its features."""

    cfg: dict
    entry: str  # features_key
    layers: list[int]
    timesteps: list[int | None]
    threads: int | None = None
    requeues: int = 0

    def __call__(self) -> dict[str, Any]:
        from vidprobe.pipeline.sweep import SweepSummary, _run_consistency

        _job_threads(self.threads)
        group = [p for p in _plans(self.cfg) if p[0].entry.features_key == self.entry]
        if not group:
            raise LauncherError(f"backbone entry {self.entry} is not in the sweep config any more")
        extract_entry(self.cfg, group[0][0].entry, self.layers, self.timesteps)
        s = SweepSummary()
        _run_consistency(self.cfg, group[0][0].entry, group, _sweep_db(self.cfg), s, False, print)
        if s.failed:
            raise RuntimeError("; ".join(f"{k}: {v}" for k, v in s.failed.items()))
        return {"consistency": s.consistency, "requeues": self.requeues}


# ---------------------------------------------------------------------------------------------- submitting, waiting


@dataclass
class Outcome:
    """How one job ended: ``ok`` with its ``result``, or the ``error`` (submitit's message with the trace)."""

    label: str
    job_id: str
    ok: bool
    result: Any = None
    error: str = ""
    log: str = ""


@dataclass
class Submission:
    """Jobs submitted together (``labels[i]`` says what job ``i`` does); ``skipped``: work already done."""

    backend: str
    folder: Path
    jobs: list = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One line per job: its id, what it does and its log file."""
        return [f"  job {j.job_id}: {lab}  (log: {j.paths.stdout})" for j, lab in zip(self.jobs, self.labels)]

    def wait(self) -> list[Outcome]:
        """Wait for every job; a job that raised (or died) is an Outcome with ``ok=False``."""
        out = []
        for j, lab in zip(self.jobs, self.labels):
            exc = j.exception()  # waits
            if exc is None:
                out.append(Outcome(lab, str(j.job_id), True, j.result(), log=str(j.paths.stdout)))
            else:
                out.append(Outcome(lab, str(j.job_id), False, error=str(exc), log=str(j.paths.stderr)))
        return out


def submit_extract(task: ExtractTask, count: int, cfg: LauncherConfig, folder: str | Path | None = None) -> Submission:
    """Submit ``count`` jobs (one Slurm job array): job ``i`` runs shard ``i/count`` of ``task``."""
    if count < 1:
        raise LauncherError(f"--array {count}: need at least one task")
    if cfg.gpus > 1:
        raise LauncherError(f"--gpus {cfg.gpus}: an extraction task is one process on one GPU; "
                            "give --array more tasks instead")
    folder = Path(folder or cfg.log_dir or Path(task.out) / ".jobs").absolute()
    task = replace(task, threads=task.threads or cfg.cpus)
    ex = make_executor(cfg, folder, "vidprobe-extract")
    jobs = ex.map_array(task, list(range(count)), [count] * count)
    return Submission(cfg.backend, folder, list(jobs), [f"shard {i}/{count}" for i in range(count)])


def submit_sweep(cfg: dict, lcfg: LauncherConfig, folder: str | Path | None = None) -> Submission:
    """Submit every sweep cell not yet in the DB as one job (one Slurm array, ``max_parallel`` at once), plus one
    consistency job per backbone with cells to do when the sweep scores consistency."""
    plans = _plans(cfg)
    done = _done_cells(cfg, plans)
    folder = Path(folder or lcfg.log_dir or Path(cfg["out"]) / "jobs").absolute()
    sub = Submission(lcfg.backend, folder, skipped=sorted(done))
    by_entry: dict[str, list] = {}
    for p in plans:
        if p[0].name not in done:
            by_entry.setdefault(p[0].entry.features_key, []).append(p)
    fns, labels = [], []
    for key, todo in by_entry.items():
        layers = sorted({c.layer for c, _, _ in todo})
        ts = sorted({c.timestep for c, _, _ in todo}, key=lambda x: (x is None, x))
        for c, _, _ in todo:
            fns.append(SweepCellJob(cfg, c.name, layers, ts, gpus=lcfg.gpus, threads=lcfg.cpus))
            labels.append(c.name)
        if cfg.get("consistency"):
            fns.append(SweepConsistencyJob(cfg, key, layers, ts, threads=lcfg.cpus))
            labels.append(f"consistency {key}")
    if fns:
        ex = make_executor(lcfg, folder, "vidprobe-sweep")
        sub.jobs, sub.labels = list(ex.submit_array(fns)), labels
    return sub
