"""`vidprobe consistency`: cross-view feature consistency of a backbone's features.

For the fixed-seed evaluation frames of each test video and every ordered
pair of views (A, B): ground-truth points of A are reprojected into B
(pixels occluded in B are dropped by a depth test), the nearest neighbour of
each A feature among B's features by cosine similarity is taken, and the
pixel distance between that match and the true reprojection is the error.
Reported: mean / median pixel error and PCK at several thresholds
(:mod:`vidprobe.metrics.correspondence`). The reference study found this
tracks probe error within diffusion models but is a biased proxy across model
families; the report plots it against probe error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vidprobe.cli import app


def consistency_scores(features_dir, dataset_path, layer: int | None = None, timestep: int | None = None,
                       split: str = "test", labels: str | None = None, max_queries: int = 500, max_videos: int | None = None,
                       frames: int = 4, max_frame: int = 76, progress: bool = True) -> dict:
    """Pooled correspondence metrics of a feature store on a dataset split (plus per-video values)."""
    from tqdm.auto import tqdm

    from vidprobe.data.sampling import FrameSampler
    from vidprobe.metrics.correspondence import clip_correspondence_metrics
    from vidprobe.probe.train import TrainConfig, open_inputs

    cfg = TrainConfig.from_dict({"features": str(features_dir), "dataset": str(dataset_path), "labels": labels,
                                 "layer": -1 if layer is None else layer, "timestep": timestep})
    store, dataset, layer_, ts = open_inputs(cfg)
    sampler = FrameSampler(num_frames=frames, max_frame=max_frame)
    have = set(store.videos(layer_, ts))
    vids = [v for v in dataset.videos(split) if v in have][: max_videos or None]
    if not vids:
        raise ValueError(f"no video of split {split!r} has features in {features_dir} for layer {layer_}, timestep {ts}")
    per_video, sums, n = {}, {}, 0
    for vid in tqdm(vids, disable=not progress, desc="consistency"):
        fr = sampler.eval_frames(vid, dataset.num_frames(vid))
        feats = store.read(vid, layer_, ts, fr)
        clip = dataset.load(vid, fr)
        m = clip_correspondence_metrics(feats.float(), clip.depth, clip.intrinsics, clip.extrinsics, clip.valid,
                                        clip.world_points(), max_queries=max_queries)
        per_video[vid] = m
        w = m.get("num_queries", 1.0) or 0.0
        for k, v in m.items():
            if k.startswith(("corr_err", "pck")) and v == v:  # skip NaN
                sums[k] = sums.get(k, 0.0) + v * w
        n += w
    agg = {k: v / n for k, v in sums.items()} if n else {}
    manifest = json.loads((Path(features_dir) / "manifest.json").read_text())
    return {"layer": layer_, "timestep": ts, "backbone": manifest.get("settings", {}).get("backbone"),
            "metrics": agg, "per_video": per_video, "videos": len(vids)}


@app.command()
def consistency(
    features: Path = typer.Option(..., "--features", "-f", help="Feature store directory."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset with ground truth."),
    layer: Optional[int] = typer.Option(None, help="Layer (default: the store's only layer)."),
    timestep: Optional[int] = typer.Option(None, help="Timestep (default: the store's only one)."),
    labels: Optional[Path] = typer.Option(None, help="Labels directory for the ground truth."),
    split: str = typer.Option("test", help="Dataset split."),
    max_videos: Optional[int] = typer.Option(None, help="Use at most this many videos."),
    max_queries: int = typer.Option(500, help="Query pixels per view pair."),
    db: Optional[Path] = typer.Option(None, help="Results DB to record the scores in (run kind 'consistency')."),
    out: Optional[Path] = typer.Option(None, help="JSON file for the scores."),
) -> None:
    """Cross-view feature consistency: nearest-neighbour correspondence error of GT reprojections."""
    from vidprobe.atomic import atomic_write_text

    res = consistency_scores(features, dataset, layer, timestep, split, str(labels) if labels else None,
                             max_queries=max_queries, max_videos=max_videos)
    for k, v in sorted(res["metrics"].items()):
        typer.echo(f"{k:>22}: {v:.4f}")
    if out:
        atomic_write_text(out, json.dumps(res, indent=1, default=str))
    if db:
        from vidprobe.results import ResultsDB

        with ResultsDB(db) as rdb:
            rid = rdb.add_run("consistency", name=f"consistency_{res['backbone']}", backbone=res["backbone"],
                              dataset=str(dataset), layer=res["layer"], timestep=res["timestep"],
                              config={"features": str(features), "split": split, "max_queries": max_queries})
            rdb.add_metrics(rid, res["metrics"], split=split)
            rdb.finish_run(rid)
        typer.echo(f"recorded in {db}")
