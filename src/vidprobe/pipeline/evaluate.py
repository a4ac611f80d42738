"""`vidprobe evaluate RUN_DIR`: score a trained probe on a split and record the numbers (orchestration).

:func:`evaluate_run` loads a run directory written by :func:`vidprobe.probe.train.train`
(``config.yaml``, ``run.json`` and the ``last`` or ``best`` checkpoint),
runs the probe on the evaluation split with the fixed-seed frame sampler
(the same frames every time), normalises the ground truth exactly as the
training loss does (:func:`vidprobe.probe.losses.prepare_targets`: rebased
to the first sampled frame, unit mean point distance), decodes the
predicted cameras (:func:`vidprobe.geometry.decode_pose`) and scores every
clip with :class:`vidprobe.metrics.MetricAccumulator`:

* ``point_err`` (confidence weighted, raw; the published table shows it
  x10), ``point_err_unweighted``;
* ``depth_err``, ``abs_rel``, ``rmse``, ``delta_1_25``;
* ``auc_3/5/10/15/30``, ``rra_5/15``, ``rta_5/15``;
* ``failed_clips``, ``failed_points``, ``failed_depth``, ``failed_camera``:
  clips whose prediction had a NaN/Inf (see below);

each with a percentile-bootstrap 95% interval over clips (2000 resamples,
seed 0). ``compat`` selects the metric definitions
(:mod:`vidprobe.metrics.modes`: ``"clean"``, or ``"reference"`` for the
release's numbers); it defaults to the run's own ``compat`` (the training
config's field, ``"clean"`` when absent) and ``--compat`` overrides it.

Failed clips: a clip whose predicted points, depth or cameras contain a
NaN/Inf is scored as a failure, never dropped: in clean mode its errors are
``+inf`` (so the split's mean errors are ``+inf``) and its accuracies 0; in
reference mode it gets the release's values. ``metrics.json`` lists the
failed clips and their failed families; the counts go to the results
database; ``vidprobe evaluate`` exits with status 1 when any clip failed
unless ``--allow-failed-clips`` is given.

Outputs (all written atomically) in ``RUN_DIR/eval_<which>/``:

* ``metrics.json`` (for the config's eval split and the run's own compat;
  other choices go to ``metrics_<split>_<compat>.json``): aggregate
  metrics, intervals, per-clip metrics, failed clips, the metric settings,
  the checkpoint and its step;
* ``clips/<clip>.safetensors`` for the first ``save_clips`` clips: predicted
  and GT points (plus the Sim(3)-aligned prediction and that Sim(3) as a 4x4
  ``pred_sim3``, which the report's 3D viewer applies to the predicted cameras), depth, confidences,
  valid mask, extrinsics, intrinsics and the input images at the output size;
* ``clips/<clip>_pred.ply`` / ``<clip>_gt.ply``: coloured point clouds.

With ``db_path`` a run row (kind ``probe``) with its metrics, intervals,
per-clip metrics, the weights label of its features (``config["weights"]``,
derived from the feature store's manifest by
:func:`vidprobe.report.provenance.weights_from_settings`) and the training curves (``loss``, ``eval_loss``, ``lr``
from ``log.jsonl``) goes into the results database.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from vidprobe.atomic import atomic_path, atomic_write_text
from vidprobe.data.fingerprint import DataMismatchError
from vidprobe.metrics.registry import EVAL_TABLE_METRICS, METRICS

__all__ = ["CHECKPOINT_CHOICES", "TABLE_METRICS", "EvalError", "EvalResult", "evaluate_run", "format_table", "read_curves",
           "run_compat"]

log = logging.getLogger(__name__)

CHECKPOINT_CHOICES = ("last", "best")
COMPAT_CHOICES = ("clean", "reference")
TABLE_METRICS = EVAL_TABLE_METRICS  # the table's rows (vidprobe.metrics.registry)
PLY_MAX_POINTS = 200_000


class EvalError(ValueError):
    """A run directory or option that cannot be evaluated (the message names the file or option)."""


@dataclass
class EvalResult:
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    per_clip: list[dict]
    run_id: int | None
    checkpoint: str
    which: str
    out_dir: Path
    split: str = "test"
    compat: str = "clean"
    step: int | None = None
    metrics_file: Path | None = None
    saved_clips: list[Path] = field(default_factory=list)
    failed_clips: dict[str, list[str]] = field(default_factory=dict)  # clip -> families with a NaN/Inf prediction
    skipped: dict[str, str] = field(default_factory=dict)  # video -> why it was left out (no features in the store)


def run_compat(cfg) -> str:
    """The metric mode a run asks for: its training config's ``compat`` (``"clean"`` when the field is absent)."""
    return getattr(cfg, "compat", None) or "clean"


def _load_run(run_dir: Path):
    from vidprobe.probe.train import ConfigError, load_config

    if not run_dir.is_dir():
        raise EvalError(f"{run_dir}: not a run directory")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise EvalError(f"{cfg_path}: missing (is {run_dir} a `vidprobe train` run directory?)")
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        raise EvalError(f"{cfg_path}: {e}") from None
    info_path = run_dir / "run.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise EvalError(f"{info_path}: missing (is {run_dir} a `vidprobe train` run directory?)") from None
    except json.JSONDecodeError as e:
        raise EvalError(f"{info_path}: invalid JSON ({e})") from None
    for key in ("layer", "out_hw", "probe"):
        if key not in info:
            raise EvalError(f"{info_path}: missing field {key!r}")
    return cfg, info


def _probe_from_info(info: dict, info_path: Path):
    from vidprobe.probe.config import ProbeConfig, ProbeConfigError
    from vidprobe.probe.model import Probe

    pc = info["probe"]
    if not isinstance(pc, dict):
        raise EvalError(f"{info_path}: field 'probe' must be the probe config mapping, got {type(pc).__name__}")
    try:
        pcfg = ProbeConfig.from_dict(dict(pc))
    except (ProbeConfigError, TypeError) as e:
        raise EvalError(f"{info_path}: field 'probe': {e}") from None
    pcfg.grad_checkpointing = False
    return Probe(pcfg), pcfg


def read_curves(run_dir: str | Path, names: tuple[str, ...] = ("loss", "eval_loss", "lr")) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from ``RUN_DIR/log.jsonl`` (unreadable lines are skipped)."""
    out: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "step" not in row:
            continue
        for n in names:
            v = row.get(n)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[n].append((int(row["step"]), float(v)))
    return out


def _save_clip(out_dir: Path, name: str, frames: list[int], pred: dict, tgt: dict, images: torch.Tensor,
               aligned: torch.Tensor | None, pred_ext, pred_K, meta: dict, sim=None) -> Path:
    """One clip's predictions and ground truth (safetensors) plus coloured PLY point clouds."""
    from vidprobe.data.ply import write_ply

    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    t: dict[str, torch.Tensor] = {
        "images": images,
        "frames": torch.tensor(frames, dtype=torch.int64),
        "gt_points": tgt["points"],
        "gt_depth": tgt["depth"],
        "gt_confidence": tgt["confidence"],
        "valid": tgt["valid"].to(torch.uint8),
        "gt_extrinsics": tgt["extrinsics"],
        "gt_intrinsics": tgt["intrinsics"],
    }
    for k in ("points", "points_conf", "depth", "depth_conf", "pose_enc"):
        if k in pred:
            t[f"pred_{k}"] = pred[k]
    if aligned is not None:
        t["pred_points_aligned"] = aligned
    if sim is not None:  # x -> s R x + t as a 4x4 matrix: the metric's alignment, for the report's viewer
        t["pred_sim3"] = torch.eye(4, dtype=torch.float64)
        t["pred_sim3"][:3, :3] = sim.scale.double() * sim.rotation.double()
        t["pred_sim3"][:3, 3] = sim.translation.double()
    if pred_ext is not None:
        t["pred_extrinsics"] = pred_ext
        t["pred_intrinsics"] = pred_K
    t = {k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
         for k, v in t.items()}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = clips_dir / f"{safe}.safetensors"
    with atomic_path(path, keep_suffix=True) as tmp:
        save_file(t, str(tmp), metadata={k: json.dumps(v, default=str) for k, v in meta.items()})  # 0600: atomic_path
    valid = tgt["valid"].bool().cpu()
    if valid.any():
        colors = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu()[valid]
        idx = torch.arange(colors.shape[0])
        if idx.numel() > PLY_MAX_POINTS:
            idx = torch.linspace(0, idx.numel() - 1, PLY_MAX_POINTS).long()
        write_ply(clips_dir / f"{safe}_gt.ply", tgt["points"].cpu()[valid][idx], colors[idx])
        src = aligned if aligned is not None else pred.get("points")
        if src is not None:
            p = src.detach().cpu().float()[valid][idx]
            ok = torch.isfinite(p).all(-1)
            write_ply(clips_dir / f"{safe}_pred.ply", p[ok], colors[idx][ok])
    return path


@dataclass
class _Opened:
    """A run directory opened for evaluation: its config, checkpoint, probe and evaluation dataset."""

    cfg: Any
    own_compat: str
    compat: str
    split: str
    ckpt: Path
    step: int | None
    model: Any
    pcfg: Any
    dev: Any
    store: Any
    ds: Any
    layer: int
    timestep: int | None
    out_hw: tuple[int, ...]


def _check_options(which: str, compat: str | None, save_clips: int) -> None:
    if which not in CHECKPOINT_CHOICES:
        raise EvalError(f"--which must be one of {CHECKPOINT_CHOICES} (or 'both' on the command line), got {which!r}")
    if compat is not None and compat not in COMPAT_CHOICES:
        raise EvalError(f"--compat must be one of {COMPAT_CHOICES}, got {compat!r}")
    if save_clips < 0:
        raise EvalError(f"--save-clips must be >= 0, got {save_clips}")


def _open(run_dir: Path, which: str, split: str | None, compat: str | None, device: str | None,
          allow_data_mismatch: bool = False) -> _Opened:
    """Config, metric mode, split, checkpoint (+ its step), the loaded probe and the evaluation dataset."""
    from vidprobe.data.sampling import FrameSampler
    from vidprobe.probe.data import ProbeDataset
    from vidprobe.probe.train import ConfigError, find_checkpoint, open_inputs, resolve_device

    cfg, info = _load_run(run_dir)
    own_compat = run_compat(cfg)
    if own_compat not in COMPAT_CHOICES:
        raise EvalError(f"{run_dir / 'config.yaml'}: field 'compat' must be one of {COMPAT_CHOICES}, got {own_compat!r}")
    compat = compat or own_compat
    split = split or cfg.eval_split
    ckpt = find_checkpoint(run_dir, which)
    if ckpt is None:
        raise EvalError(f"{run_dir / 'checkpoints' / (which + '.json')}: no {which!r} checkpoint in {run_dir}")
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = {}

    dev = resolve_device(device or cfg.device)
    model, pcfg = _probe_from_info(info, run_dir / "run.json")
    try:
        from vidprobe.probe.checkpoint import load_tensors

        sd = load_tensors(ckpt / "model.safetensors")  # a corrupt file is named, not a traceback
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise EvalError(f"{ckpt / 'model.safetensors'}: does not match the probe in run.json ({e})") from None
    model.to(dev).eval()

    try:
        store, dataset, _, _ = open_inputs(cfg)
    except ConfigError as e:
        raise EvalError(f"{run_dir / 'config.yaml'}: {e}") from None
    layer, timestep = info["layer"], info.get("timestep")
    out_hw = tuple(int(x) for x in info["out_hw"])
    sampler = FrameSampler(**asdict(cfg.sampler))
    try:
        ds = ProbeDataset(store, layer, timestep, dataset, split, sampler, out_hw, seed=cfg.seed,
                          allow_data_mismatch=allow_data_mismatch)
    except DataMismatchError:
        raise
    except ValueError as e:
        raise EvalError(str(e)) from None
    return _Opened(cfg, own_compat, compat, split, ckpt, state.get("step"), model, pcfg, dev, store, ds, layer, timestep,
                   out_hw)


def _score(run: _Opened, which: str, which_dir: Path, save_clips: int, progress: bool, batch_size: int | None):
    """Run the probe over the split: ``(accumulator, saved clip files, frames of each clip)``."""
    from vidprobe.geometry import decode_pose
    from vidprobe.metrics import MetricAccumulator
    from vidprobe.metrics.points import point_errors
    from vidprobe.probe.data import collate
    from vidprobe.probe.losses import LossConfig, targets_for
    from vidprobe.probe.train import autocast_ctx, to_device

    cfg, ds, out_hw, compat = run.cfg, run.ds, run.out_hw, run.compat
    loss_cfg = LossConfig.from_dict(cfg.loss) if cfg.loss else LossConfig()
    heads = set(run.pcfg.active_heads)
    acc = MetricAccumulator(compat=compat)
    bs = batch_size or cfg.batch_size
    saved: list[Path] = []
    frames_of: dict[str, list[int]] = {}
    backbone = run.store.settings.get("backbone")
    bar = tqdm(total=len(ds), disable=not progress, desc=f"evaluate {which}", unit="clip", dynamic_ncols=True)
    with torch.no_grad():
        for start in range(0, len(ds), bs):
            samples = [ds.get(j, None) for j in range(start, min(len(ds), start + bs))]
            batch = to_device(collate(samples), run.dev)
            with autocast_ctx(run.dev, cfg.precision):
                pred = run.model(batch["features"])
            pred = {k: v.float() for k, v in pred.items() if isinstance(v, torch.Tensor)}
            tgt = targets_for(batch["gt"], loss_cfg, out_hw)
            pred_ext = pred_K = None
            if "pose_enc" in pred:
                pred_ext, pred_K = decode_pose(pred["pose_enc"], out_hw)
            kw: dict[str, Any] = {"clip_ids": batch["videos"]}
            if "points" in heads:
                kw.update(pred_points=pred["points"], gt_points=tgt["points"], gt_conf=tgt["confidence"], valid=tgt["valid"])
            if "depth" in heads:
                kw.update(pred_depth=pred["depth"], gt_depth=tgt["depth"], valid=tgt["valid"], gt_conf=tgt["confidence"])
            if pred_ext is not None:
                kw.update(pred_extrinsics=pred_ext, gt_extrinsics=tgt["extrinsics"])
            acc.update(**kw)
            for b, s in enumerate(samples):
                frames_of[s.video] = list(s.frames)
                if len(saved) < save_clips:
                    aligned = sim = None
                    if "points" in pred:
                        pe = point_errors(pred["points"][b], tgt["points"][b], tgt["confidence"][b], tgt["valid"][b],
                                          compat=compat)
                        aligned, sim = pe.aligned, pe.sim3
                    meta = {"video": s.video, "frames": list(s.frames), "which": which, "step": run.step,
                            "split": run.split, "backbone": backbone, "out_hw": list(out_hw)}
                    saved.append(_save_clip(
                        which_dir, s.video, list(s.frames), {k: v[b] for k, v in pred.items()},
                        {k: v[b] for k, v in tgt.items()}, batch["gt"]["images"][b],
                        aligned, None if pred_ext is None else pred_ext[b], None if pred_K is None else pred_K[b], meta,
                        sim=sim,
                    ))
            bar.update(len(samples))
    bar.close()
    return acc, saved, frames_of


def evaluate_run(
    run_dir: str | Path,
    which: str = "last",
    split: str | None = None,
    compat: str | None = None,
    db_path: str | Path | None = None,
    save_clips: int = 3,
    progress: bool = True,
    batch_size: int | None = None,
    device: str | None = None,
    n_resamples: int = 2000,
    allow_data_mismatch: bool = False,
) -> EvalResult:
    """Evaluate the ``which`` (``last`` | ``best``) checkpoint of a run on ``split`` (default: the config's eval split).

    ``compat``: metric definitions, ``"clean"`` or ``"reference"`` (default: :func:`run_compat` of the run).
    Features from other data than the dataset's raise ``DataMismatchError`` unless ``allow_data_mismatch``
    (:mod:`vidprobe.data.fingerprint`); videos of the split without features are left out, listed in ``skipped``.
    """
    from vidprobe.probe.data import NO_FEATURES

    run_dir = Path(run_dir)
    _check_options(which, compat, save_clips)
    run = _open(run_dir, which, split, compat, device, allow_data_mismatch)
    cfg, split, compat = run.cfg, run.split, run.compat
    backbone = run.store.settings.get("backbone")
    which_dir = run_dir / f"eval_{which}"
    which_dir.mkdir(parents=True, exist_ok=True)
    acc, saved, frames_of = _score(run, which, which_dir, save_clips, progress, batch_size)

    metrics = acc.compute()
    cis = acc.intervals(n_resamples=n_resamples, seed=0)
    ci = {k: (float(v.low), float(v.high)) for k, v in cis.items()}
    per_clip = [{"clip": cid, "frames": frames_of.get(cid), **m} for cid, m in acc.per_clip()]
    failed = acc.failed_clips()
    if failed:
        log.warning("%s: %d of %d clips have non-finite predictions and count as failures (%s mode): %s",
                    run_dir, len(failed), len(per_clip), compat, ", ".join(list(failed)[:5]) + (" ..." if len(failed) > 5 else ""))

    from vidprobe.report.provenance import weights_from_settings

    weights = weights_from_settings(run.store.settings)  # from the store's manifest, never from the caller
    default_out = split == cfg.eval_split and compat == run.own_compat
    mfile = which_dir / ("metrics.json" if default_out else f"metrics_{split}_{compat}.json")
    doc = {
        "run_dir": str(run_dir),
        "checkpoint": str(run.ckpt),
        "which": which,
        "step": run.step,
        "split": split,
        "compat": compat,
        "metric_settings": acc.settings.to_dict(),
        "backbone": backbone,
        "weights": weights,
        "layer": run.layer,
        "timestep": run.timestep,
        "missing_features": list(run.ds.missing),
        "metrics": metrics,
        "failed_clips": failed,
        "ci": {k: list(v) for k, v in ci.items()},
        "per_clip": per_clip,
    }
    atomic_write_text(mfile, json.dumps(doc, indent=1, default=_json_default, allow_nan=True))

    run_id = None
    if db_path is not None:
        run_id = _record(db_path, cfg, run_dir, run.ckpt, which, run.step, split, compat, backbone, run.layer,
                         run.timestep, run.pcfg, metrics, cis, acc.per_clip(), acc.settings.to_dict(), failed, weights)
    return EvalResult(metrics=metrics, ci=ci, per_clip=per_clip, run_id=run_id, checkpoint=str(run.ckpt), which=which,
                      out_dir=which_dir, split=split, compat=compat, step=run.step, metrics_file=mfile,
                      saved_clips=saved, failed_clips=failed, skipped=dict.fromkeys(run.ds.missing, NO_FEATURES))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _record(db_path, cfg, run_dir, ckpt, which, step, split, compat, backbone, layer, timestep, pcfg,
            metrics, cis, per_clip, settings, failed, weights=None) -> int:
    from vidprobe.results import ResultsDB

    preset = cfg.probe.get("preset", "reference") if isinstance(cfg.probe, dict) else str(cfg.probe)
    config = {
        "train": cfg.to_dict(),
        "probe": pcfg.to_dict(),
        "eval": {"split": split, "compat": compat, "which": which, "step": step, "run_dir": str(run_dir),
                 "metric_settings": settings, "failed_clips": failed},
        "weights": weights,  # vidprobe.report.provenance: what the features' weights were
    }
    if weights is None:
        del config["weights"]
    with ResultsDB(db_path) as db:
        run_id = db.add_run(
            "probe", name=cfg.name, backbone=backbone, dataset=cfg.dataset, layer=layer, timestep=timestep,
            probe=preset, seed=cfg.seed, config=config, checkpoint=str(ckpt), checkpoint_kind=which,
        )
        try:
            db.add_metrics(run_id, metrics, split=split, ci={k: v for k, v in cis.items() if k in metrics})
            db.add_clip_metrics(run_id, per_clip, split=split)
            for name, pts in read_curves(run_dir).items():
                if pts:
                    db.add_curve(run_id, name, pts)
        except BaseException:
            db.finish_run(run_id, status="failed")
            raise
        db.finish_run(run_id, status="done")
    return run_id


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.4f}"


def format_table(results: list[EvalResult]) -> str:
    """A plain-text table: one row per metric, one column per evaluated checkpoint (value [95% CI]).

    Labels and scales come from :mod:`vidprobe.metrics.registry`; Point Err is shown raw and x10.
    """
    rows = [("metric", *[f"{r.which} (step {r.step}, {r.split}, {r.compat})" for r in results])]
    names = [m for m in TABLE_METRICS if any(m in r.metrics for r in results)]
    for m in names:
        cells = []
        for r in results:
            v = r.metrics.get(m)
            lo, hi = r.ci.get(m, (math.nan, math.nan))
            cells.append(f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]")
        spec = METRICS[m]  # a scaled metric names its scale: "point_err (raw)", then "point_err x10 (table)"
        rows.append((spec.key_column(scaled=False), *cells))
        if spec.scaled_in_tables:
            rows.append((f"{spec.key_column(scaled=True)} (table)", *[_fmt(spec.scale(r.metrics.get(m))) for r in results]))
    rows.append(("clips", *[str(int(r.metrics.get("num_clips", len(r.per_clip)))) for r in results]))
    rows.append(("failed clips (NaN/Inf prediction)", *[str(int(r.metrics.get("failed_clips", 0))) for r in results]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        lines.append(f"{r.which}: {r.checkpoint}" + (f"  (results db run {r.run_id})" if r.run_id is not None else ""))
    return "\n".join(lines)
