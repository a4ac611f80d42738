"""`vidprobe train CONFIG`: fit a probe on frozen features (the loop; its parts live next to it).

Everything a run needs is in one YAML file (see ``configs/``; the schema and loader:
:mod:`vidprobe.probe.train_config`); ``--set key=value`` overrides single fields. A run directory holds
``config.yaml``, ``run.json``, ``log.jsonl`` + ``log.csv`` (every step, :mod:`~vidprobe.probe.run_log`),
``checkpoints/step_XXXXXXX/`` (``model.safetensors``, ``optimizer.safetensors``, ``rng.safetensors``,
``state.json``) and ``best`` + ``last`` pointers (:mod:`~vidprobe.probe.checkpoint`). ``--resume``
continues exactly: samples are drawn from seeds derived from (seed, epoch, video), so a resumed run sees
the same batches and ends with the same weights as an uninterrupted one.

Multi-GPU: run under ``torchrun``; each rank takes its slice of every global batch and DDP averages the
gradients (gloo on CPU, NCCL on GPU; :mod:`~vidprobe.probe.distributed`). The learning rate follows
:mod:`~vidprobe.probe.schedule`.

Input: a DataLoader (``loader:`` settings, :class:`~vidprobe.probe.train_config.LoaderConfig`: workers, prefetch,
pinned memory) yields batches in the store's dtype; :func:`~vidprobe.probe.inputs.to_device` makes them fp32 and
checks them on the device. Each step row logs ``data_wait`` (seconds blocked on the loader) and the run ends with
a ``train_summary`` row: ``data_wait_fraction`` = time blocked on the loader / step time
(:class:`~vidprobe.probe.run_log.DataWait`).

This module also re-exports the names other modules import from ``vidprobe.probe.train``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from vidprobe.atomic import atomic_write_text
from vidprobe.config import ConfigError, set_by_path
from vidprobe.data.fingerprint import DataMismatchError
from vidprobe.data.sampling import FrameSampler
from vidprobe.probe.checkpoint import (
    find_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_pointer,
    restore_checkpoint,
    save_checkpoint,
    update_best,
)
from vidprobe.probe.data import NO_FEATURES, EvalBatches, ProbeDataset, StepBatches, batches, make_loader
from vidprobe.probe.distributed import Dist, barrier, init_distributed, resolve_device
from vidprobe.probe.inputs import autocast_ctx, build_probe, dataset_hw, open_inputs, to_device
from vidprobe.probe.losses import LossConfig, NonFiniteLossError, probe_loss
from vidprobe.probe.run_log import DataWait, RunLogger, truncate_logs
from vidprobe.probe.schedule import build_optimizer, lr_lambda, lr_schedule, steps_in_epoch, warmup_steps
from vidprobe.probe.train_config import (
    FROM_MODE,
    WARMUP_RULES,
    LoaderConfig,
    OptimConfig,
    SamplerConfig,
    TrainConfig,
    load_config,
)

__all__ = [
    "FROM_MODE", "WARMUP_RULES", "ConfigError", "Dist", "LoaderConfig", "OptimConfig", "RunLogger", "SamplerConfig",
    "TrainConfig", "TrainResult", "autocast_ctx", "build_optimizer", "build_probe", "dataset_hw", "evaluate_loss", "find_checkpoint",
    "init_distributed", "load_config", "lr_lambda", "lr_schedule", "open_inputs", "optimizer_from_tensors",
    "optimizer_to_tensors", "resolve_device", "save_checkpoint", "set_by_path", "steps_in_epoch", "to_device", "train",
    "warmup_steps",
]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    final_loss: float
    eval_loss: float | None
    model: Any = None  # the trained nn.Module (unwrapped; on its training device)
    already_finished: bool = False  # resumed a run whose last checkpoint is at the final step: nothing was trained
    data_wait_fraction: float | None = None  # time blocked on the loader / step time (after the first step)
    skipped: dict[str, str] | None = None  # video -> why it was left out (split videos without features)


@dataclass
class _Run:
    """What the loop works with (built by :func:`_setup`); ``step`` is the number of steps done."""

    cfg: TrainConfig
    device: torch.device
    dist: Dist
    run_dir: Path
    train_ds: ProbeDataset
    eval_ds: ProbeDataset | None
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    loss_cfg: LossConfig
    out_hw: tuple[int, int]
    opt: torch.optim.Optimizer
    sched: Any
    steps_per_epoch: int
    total: int
    step: int
    resumed: bool
    info: dict  # run.json
    eval_loader: Any = None  # the evaluation DataLoader (built on first use; its workers persist between passes)

    def loss(self, pred: dict, gt: dict):
        return probe_loss(pred, gt, tuple(self.out_hw), self.loss_cfg)


def evaluate_loss(model, loader, loss_fn, device, precision: str) -> float:
    """Mean loss over the batches of ``loader`` (collated CPU batches, e.g. :class:`EvalBatches` of a dataset's
    fixed evaluation frames), in eval mode."""
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for cpu_batch in batches(loader):
            batch = to_device(cpu_batch, device)
            with autocast_ctx(device, precision):
                pred = model(batch["features"])
            loss, _ = loss_fn(pred, batch["gt"])
            tot += float(loss) * batch["features"].shape[0]
            n += batch["features"].shape[0]
    model.train()
    return tot / max(1, n)


def _setup(cfg: TrainConfig, resume: bool, allow_data_mismatch: bool = False) -> _Run:
    """Device, process group, seeds, data, probe, loss, optimiser and schedule; the checkpoint on resume."""
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last = find_checkpoint(run_dir, "last") if resume else None
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").glob("step_*")):
        ptr = read_pointer(run_dir / "checkpoints" / "last.json")
        at = f" (the last at step {ptr['step']})" if ptr and "step" in ptr else ""
        raise ConfigError(f"{run_dir} already holds checkpoints{at}: pass --resume to continue, or choose another 'out'")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))

    store, dataset, layer, timestep = open_inputs(cfg)
    sampler = FrameSampler(**asdict(cfg.sampler))
    train_ids = dataset.videos(cfg.train_split)
    out_hw = cfg.out_hw or dataset_hw(dataset, train_ids[0])
    train_ds = ProbeDataset(store, layer, timestep, dataset, cfg.train_split, sampler, out_hw, seed=cfg.seed,
                            allow_data_mismatch=allow_data_mismatch)
    try:
        eval_ds = ProbeDataset(store, layer, timestep, dataset, cfg.eval_split, sampler, out_hw, seed=cfg.seed,
                               allow_data_mismatch=allow_data_mismatch)
    except DataMismatchError:
        raise
    except ValueError:
        eval_ds = None
    in_channels = train_ds.get(0, 0).features.shape[-1]
    model, pcfg = build_probe(cfg, in_channels, out_hw)  # after the seeds: the same initial weights every time
    model.to(device)
    loss_cfg = cfg.loss_config()

    opt = build_optimizer(model, cfg.optim)
    steps_per_epoch = steps_in_epoch(len(train_ds), cfg.batch_size * dist.world, cfg.drop_last)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(total, cfg.optim, cfg.epochs))
    step = 0
    if last is not None:
        step = restore_checkpoint(last, model, opt, sched)
        if dist.main:
            truncate_logs(run_dir, step)

    ddp_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    info = {
        "layer": layer,
        "timestep": timestep,
        "in_channels": in_channels,
        "out_hw": list(out_hw),
        "probe": asdict(pcfg),
        "loss": loss_cfg.to_dict(),
        "compat": cfg.compat,
        "warmup_steps": warmup_steps(total, cfg.optim, cfg.epochs),
        "train_videos": len(train_ds),
        "eval_videos": len(eval_ds) if eval_ds else 0,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "world_size": dist.world,
        "loader": {**asdict(cfg.loader), "workers": cfg.loader.num_workers()},
    }
    return _Run(cfg, device, dist, run_dir, train_ds, eval_ds, model, ddp_model, loss_cfg, tuple(out_hw), opt, sched,
                steps_per_epoch, total, step, last is not None, info)


def _write_run_files(run: _Run) -> None:
    """``config.yaml`` (the resolved config) and ``run.json`` (what the run derived), on rank 0."""
    if run.dist.main:
        atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(run.cfg.to_dict(), sort_keys=False))
        atomic_write_text(run.run_dir / "run.json", json.dumps(run.info, indent=1, default=str))


def _train_loader(run: _Run, end: int):
    """This rank's batches of steps ``run.step .. end-1`` (:class:`StepBatches`), through the run's DataLoader."""
    cfg = run.cfg
    keys = StepBatches(len(run.train_ds), cfg.batch_size, run.steps_per_epoch, cfg.seed, run.step, end,
                       run.dist.world, run.dist.rank)
    return make_loader(run.train_ds, keys, cfg.loader, run.device, cfg.seed)


def _eval_loader(run: _Run):
    if run.eval_loader is None:
        keys = EvalBatches(len(run.eval_ds), run.cfg.batch_size)
        run.eval_loader = make_loader(run.eval_ds, keys, run.cfg.loader, run.device, run.cfg.seed)
    return run.eval_loader


def _optimise(run: _Run, batch: dict, logger: RunLogger):
    """Forward, loss, backward, (clip), optimiser and scheduler step; returns (loss, terms, grad norm)."""
    with autocast_ctx(run.device, run.cfg.precision):
        pred = run.ddp_model(batch["features"])
    try:
        loss, terms = run.loss(pred, batch["gt"])
    except NonFiniteLossError as e:
        logger.log({"step": run.step, "event": "nonfinite_loss", "error": str(e), "videos": ",".join(batch["videos"])})
        raise
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    clip = run.cfg.optim.grad_clip
    if clip:
        gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    else:  # no clipping: the norm is still logged
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in run.model.parameters() if p.grad is not None])
    run.opt.step()
    run.sched.step()
    return loss, terms, gnorm


def _evaluate_and_checkpoint(run: _Run, epoch: int, logger: RunLogger, best_eval: float | None) -> float | None:
    """After step ``run.step``: the eval loss and a checkpoint when due (rank 0); returns the best eval loss."""
    cfg, step = run.cfg, run.step
    epoch_end = step % run.steps_per_epoch == 0
    epochs_done = step // run.steps_per_epoch
    want_ckpt = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
        epoch_end and cfg.checkpoint_epochs and epochs_done % cfg.checkpoint_epochs == 0
    ) or step == run.total
    want_eval = run.eval_ds is not None and (
        step == run.total or (epoch_end and cfg.eval_every_epochs and epochs_done % cfg.eval_every_epochs == 0)
    )
    if want_eval and run.dist.main:
        ev = evaluate_loss(run.model, _eval_loader(run), run.loss, run.device, cfg.precision)
        logger.log({"step": step, "epoch": epoch, "eval_loss": ev})
        if best_eval is None or ev < best_eval:
            best_eval = ev
    if want_ckpt and run.dist.main:
        path = save_checkpoint(run.run_dir, run.model, run.opt, run.sched, step, epochs_done, cfg, cfg.keep_checkpoints)
        if want_eval:
            update_best(run.run_dir, step, path, best_eval)
    return best_eval


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after_steps: int | None = None,
          allow_data_mismatch: bool = False) -> TrainResult:
    """Train a probe. ``stop_after_steps`` ends the process's loop early (used to simulate a crash in tests);
    ``allow_data_mismatch`` uses features whose data fingerprints differ from the dataset (with a warning)."""
    run = _setup(cfg, resume, allow_data_mismatch)
    if run.resumed and run.step >= run.total:  # nothing left to do: say so instead of a loss of no step
        prev_best = read_pointer(run.run_dir / "checkpoints" / "best.json")
        return TrainResult(run_dir=run.run_dir, steps=run.step, last_checkpoint=find_checkpoint(run.run_dir, "last"),
                           best_checkpoint=find_checkpoint(run.run_dir, "best"), final_loss=float("nan"),
                           eval_loss=prev_best.get("eval_loss") if prev_best else None, model=run.model,
                           already_finished=True)
    _write_run_files(run)
    logger = RunLogger(run.run_dir, cfg, enabled=run.dist.main)
    bar = tqdm(total=run.total, initial=run.step, disable=not (progress and run.dist.main), desc=cfg.name, unit="step",
               dynamic_ncols=True)
    run.model.train()
    last_loss = float("nan")
    best_eval = None
    if run.resumed:  # the best so far survives a restart
        prev_best = read_pointer(run.run_dir / "checkpoints" / "best.json")
        best_eval = prev_best.get("eval_loss") if prev_best else None
    end = run.total if stop_after_steps is None else min(run.total, run.step + stop_after_steps)
    loader_iter = batches(_train_loader(run, end))
    wait = DataWait()
    t0 = time.time()
    while run.step < end:
        epoch = run.step // run.steps_per_epoch
        t_step = time.perf_counter()
        cpu_batch = next(loader_iter)
        waited = time.perf_counter() - t_step
        loss, terms, gnorm = _optimise(run, to_device(cpu_batch, run.device), logger)
        run.step += 1
        last_loss = float(loss.detach())  # waits for the device: the step time below is the device's too
        wait.add(waited, time.perf_counter() - t_step)
        row = {"step": run.step, "epoch": epoch, "loss": last_loss, "lr": run.sched.get_last_lr()[0],
               "grad_norm": float(gnorm), "time": round(time.time() - t0, 3), "data_wait": round(waited, 6)}
        row.update({f"loss_{k}": float(v) for k, v in terms.items()})
        logger.log(row)
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{row['lr']:.2e}", wait=wait.percent())
        best_eval = _evaluate_and_checkpoint(run, epoch, logger, best_eval)
        barrier(run.dist)
    bar.close()
    logger.log(wait.summary(run.step))
    logger.close()
    run.eval_loader = loader_iter = None  # ends the worker processes
    return TrainResult(
        run_dir=run.run_dir,
        steps=run.step,
        last_checkpoint=find_checkpoint(run.run_dir, "last"),
        best_checkpoint=find_checkpoint(run.run_dir, "best"),
        final_loss=last_loss,
        eval_loss=best_eval,
        model=run.model,
        data_wait_fraction=wait.fraction,
        skipped={v: NO_FEATURES for ds in (run.train_ds, run.eval_ds) if ds is not None for v in ds.missing},
    )

