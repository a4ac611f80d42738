"""Cross-view feature consistency of a backbone's features (the command: `vidprobe consistency`).

For the fixed-seed evaluation frames of each test video (the frames the
probe is scored on) and ordered pairs of those views (A, B): ground-truth
points of A are reprojected into B (pixels occluded in B are dropped by a
depth test), the nearest neighbour of each A feature among B's features by
cosine similarity is taken, and the pixel distance between that match and the
true reprojection is the error (:mod:`vidprobe.metrics.correspondence`).

Reported, pooled over every query of every pair of every video (so the median
is the median of all errors, not a mean of medians): ``corr_err_px`` (mean),
``corr_err_median_px``, ``pck_{t}px`` and ``pck_{f}diag`` (PCK at pixel
thresholds and at fractions of the image diagonal), ``num_queries``,
``num_pairs``, ``videos``. In the results DB a run of kind ``consistency``
carries the same backbone / dataset / layer / timestep columns as the probe
runs, so a report can pair each probe cell with its consistency score (the
reference found it tracks probe error within diffusion models but is a biased
proxy across model families).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch


def _pairs(S: int, n: int | None, rng: random.Random) -> list[tuple[int, int]]:
    allp = [(a, b) for a in range(S) for b in range(S) if a != b]
    if n is None or n >= len(allp):
        return allp
    return sorted(rng.sample(allp, max(1, int(n))))


def consistency_scores(
    features_dir,
    dataset_path,
    layer: int | None = None,
    timestep: int | None = None,
    split: str = "test",
    labels: str | None = None,
    max_queries: int = 500,
    max_videos: int | None = None,
    frames: int = 4,
    max_frame: int = 76,
    pairs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    allow_data_mismatch: bool = False,
) -> dict[str, Any]:
    """Pooled correspondence metrics of a feature store on a dataset split, plus per-video values.

    ``pairs``: ordered view pairs per video (a fixed-seed subset; default all ``frames*(frames-1)``).
    Videos of the split without features in the store are left out (``missing``, without ``max_videos``);
    a video that fails is skipped and counted (``failed``). Features from other data than the dataset's
    raise ``DataMismatchError`` unless ``allow_data_mismatch`` (:mod:`vidprobe.data.fingerprint`).
    Returns ``{backbone, layer, timestep, videos, failed, missing, metrics, per_video}``.
    """
    from tqdm.auto import tqdm

    from vidprobe.data.fingerprint import DataMismatchError, check_store_data
    from vidprobe.data.sampling import FrameSampler, stable_seed
    from vidprobe.metrics.correspondence import (
        FRAC_THRESHOLDS,
        PX_THRESHOLDS,
        correspondence_errors,
        summarize_correspondence,
    )
    from vidprobe.probe.train import TrainConfig, open_inputs

    cfg = TrainConfig.from_dict({"features": str(features_dir), "dataset": str(dataset_path), "labels": labels,
                                 "layer": layer, "timestep": timestep})
    store, dataset, layer_, ts = open_inputs(cfg)
    sampler = FrameSampler(num_frames=frames, max_frame=max_frame)
    have = set(store.videos(layer_, ts))
    vids = [v for v in dataset.videos(split) if v in have][: max_videos or None]
    missing = [] if max_videos else [v for v in dataset.videos(split) if v not in have]
    if not vids:
        raise ValueError(f"no video of split {split!r} has features in {features_dir} for layer {layer_}, timestep {ts}")
    check = check_store_data(dataset, vids, lambda v: store.header(v, layer_, ts).metadata, str(store.root),
                             allow=allow_data_mismatch)
    per_video: dict[str, dict] = {}
    failed: dict[str, str] = {}
    errs, hits_diag, n_pairs = [], {f: [] for f in FRAC_THRESHOLDS}, 0
    for vid in tqdm(vids, disable=not progress, desc="consistency", unit="video"):
        try:
            fr = sampler.eval_frames(vid, dataset.num_frames(vid), seed=seed)
            feats = store.read(vid, layer_, ts, fr).float()
            clip = dataset.load(vid, fr)
            check.sample(vid, fr, clip)
            pts = clip.world_points()
            rng = random.Random(stable_seed("vidprobe.consistency", seed, vid))
            ve = []
            pp = _pairs(len(fr), pairs, rng)
            for k, (a, b) in enumerate(pp):
                e, _ = correspondence_errors(
                    feats[a], feats[b], clip.depth[a], clip.depth[b], clip.intrinsics[a], clip.intrinsics[b],
                    clip.extrinsics[a], clip.extrinsics[b], clip.valid[a], clip.valid[b], pts[a],
                    max_queries=max_queries, seed=seed + k,
                )  # fmt: skip
                ve.append(e.double().reshape(-1))
        except DataMismatchError:
            raise
        except Exception as ex:  # noqa: BLE001 - a broken video is skipped and counted
            failed[vid] = f"{type(ex).__name__}: {ex}"
            continue
        ve_t = torch.cat(ve) if ve else torch.zeros(0, dtype=torch.float64)
        hw = tuple(clip.depth.shape[-2:])
        per_video[vid] = summarize_correspondence(ve_t, hw) | {"num_pairs": float(len(pp))}
        errs.append(ve_t)
        diag = math.hypot(*hw)
        for f in FRAC_THRESHOLDS:
            hits_diag[f].append(ve_t <= f * diag)
        n_pairs += len(pp)
    if not per_video:
        raise ValueError(f"consistency: every video failed, e.g. {next(iter(failed.items()))}")
    e = torch.cat(errs)
    n = e.numel()
    nan = float("nan")
    agg = {"corr_err_px": float(e.mean()) if n else nan, "corr_err_median_px": float(e.median()) if n else nan}
    for t in PX_THRESHOLDS:
        agg[f"pck_{t:g}px"] = float((e <= t).double().mean()) if n else nan
    for f in FRAC_THRESHOLDS:
        agg[f"pck_{f:g}diag"] = float(torch.cat(hits_diag[f]).double().mean()) if n else nan
    agg.update(num_queries=float(n), num_pairs=float(n_pairs), videos=float(len(per_video)))
    return {"backbone": store.settings.get("backbone"), "layer": layer_, "timestep": ts, "split": split,
            "videos": len(per_video), "failed": failed, "missing": missing, "metrics": agg, "per_video": per_video}


def record_consistency(
    db_path,
    features_dir,
    dataset_path,
    layer: int | None = None,
    timestep: int | None = None,
    split: str = "test",
    labels: str | None = None,
    skip_done: bool = False,
    progress: bool = True,
    result: dict | None = None,
    **opts: Any,
) -> int:
    """Score a store (or take ``result`` from :func:`consistency_scores`) and record a ``consistency`` run.

    With ``skip_done`` an existing finished run of the same backbone, dataset, layer, timestep and
    options is returned instead of recomputing. Returns the run id.
    """
    from vidprobe.features.store import FeatureStore
    from vidprobe.results import ResultsDB

    config = {"features": str(Path(features_dir).resolve()), "labels": labels, "split": split,
              "layer": layer, "timestep": timestep, **{k: opts[k] for k in sorted(opts)}}
    if skip_done and Path(db_path).exists():
        backbone = FeatureStore(features_dir).settings.get("backbone")
        with ResultsDB(db_path) as db:
            r = db.find_run(kind="consistency", backbone=backbone, dataset=str(dataset_path), config=config)
        if r is not None:
            return int(r["run_id"])
    res = result or consistency_scores(features_dir, dataset_path, layer, timestep, split, labels, progress=progress, **opts)
    with ResultsDB(db_path) as db:
        rid = db.add_run("consistency", name=f"consistency_{res['backbone']}_L{res['layer']}_T{res['timestep']}",
                         backbone=res["backbone"], dataset=str(dataset_path), layer=res["layer"], timestep=res["timestep"],
                         config=config)
        try:
            db.add_metrics(rid, res["metrics"], split=split)
            db.add_clip_metrics(rid, list(res["per_video"].items()), split=split)
        except BaseException:
            db.finish_run(rid, status="failed")
            raise
        db.finish_run(rid)
    return rid
