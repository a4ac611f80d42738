"""Metrics: pure functions on tensors, each definition in its module's docstring.

* :mod:`vidprobe.metrics.camera` - relative pose errors, AUC@k, RRA/RTA
  (``compat="clean"`` gauge-invariant VGGT definition, or ``"reference"``
  for the release's numbers), :class:`CameraMetricAccumulator`.
* :mod:`vidprobe.metrics.points` - Sim(3)-aligned Point Err (reference,
  confidence weighted; the table shows x10) and its unweighted version;
  accuracy / completeness / Chamfer.
* :mod:`vidprobe.metrics.depth` - the reference Depth Err; AbsRel, RMSE,
  delta<1.25 after per-clip median scaling.
* :mod:`vidprobe.metrics.correspondence` - feature nearest-neighbour
  correspondence error between views (consistency analysis).
* :mod:`vidprobe.metrics.stats` - bootstrap and t intervals.

:class:`MetricAccumulator` runs all of them on batches of probe outputs and
keeps per-clip values, so an evaluation loop needs one object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vidprobe.metrics.camera import (
    ACC_THRESHOLDS,
    AUC_THRESHOLDS,
    CameraMetricAccumulator,
    auc_pooled,
    auc_reference,
    camera_metrics,
    relative_pose_errors,
)
from vidprobe.metrics.correspondence import clip_correspondence_metrics, correspondence_metrics
from vidprobe.metrics.depth import depth_error_reference, depth_metrics, median_scale
from vidprobe.metrics.points import TABLE_SCALE, chamfer_metrics, point_errors, top_confidence_mask
from vidprobe.metrics.stats import CI, bootstrap_ci, mean_ci_t

__all__ = [
    "ACC_THRESHOLDS",
    "AUC_THRESHOLDS",
    "TABLE_SCALE",
    "CI",
    "CameraMetricAccumulator",
    "MetricAccumulator",
    "auc_pooled",
    "auc_reference",
    "bootstrap_ci",
    "camera_metrics",
    "chamfer_metrics",
    "clip_correspondence_metrics",
    "correspondence_metrics",
    "depth_error_reference",
    "depth_metrics",
    "mean_ci_t",
    "median_scale",
    "point_errors",
    "relative_pose_errors",
    "top_confidence_mask",
]


class MetricAccumulator:
    """Per-clip point, depth and camera metrics over a split, with aggregates and intervals.

    ``update(...)`` takes one batch of clips (leading ``B``; any argument may
    be ``None`` to skip that family):

    * ``pred_points [B,S,H,W,3]``, ``gt_points``; ``gt_conf [B,S,H,W]``;
      ``valid [B,S,H,W]`` (defaults to all pixels)
    * ``pred_depth [B,S,H,W]``, ``gt_depth``
    * ``pred_extrinsics [B,S,3,4]``, ``gt_extrinsics``
    * ``clip_ids``: ``B`` names (default: running index)

    All in the normalised GT frame. Aggregates (``compute``): points and
    depth are means over clips of the per-clip values (clips where a metric
    is NaN - no valid pixel - are left out and counted in
    ``skipped_<metric>``, present only when non-zero); camera metrics come from
    :class:`CameraMetricAccumulator` with the chosen ``camera_compat``
    (pooled pairs, or the reference's per-batch mean with
    ``camera_batch_size``). ``chamfer=True`` adds acc/comp/chamfer (slower).
    """

    def __init__(
        self, camera_compat: str = "clean", camera_batch_size: int = 10, chamfer: bool = False, top_fraction=0.25
    ) -> None:
        self.camera = CameraMetricAccumulator(compat=camera_compat, batch_size=camera_batch_size)
        self.chamfer = chamfer
        self.top_fraction = top_fraction
        self._clips: list[dict[str, float]] = []
        self._ids: list[str] = []
        self._camera_rows: list[int] = []  # index into _clips of each clip that has camera metrics

    def __len__(self) -> int:
        return len(self._clips)

    @torch.no_grad()
    def update(
        self,
        pred_points: torch.Tensor | None = None,
        gt_points: torch.Tensor | None = None,
        gt_conf: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        pred_depth: torch.Tensor | None = None,
        gt_depth: torch.Tensor | None = None,
        pred_extrinsics: torch.Tensor | None = None,
        gt_extrinsics: torch.Tensor | None = None,
        clip_ids: Sequence[str] | None = None,
    ) -> None:
        batch = next(
            (x.shape[0] for x in (pred_points, pred_depth, pred_extrinsics) if x is not None), None
        )
        if batch is None:
            raise ValueError("MetricAccumulator.update: give at least one of pred_points, pred_depth, pred_extrinsics")
        if clip_ids is not None and len(clip_ids) != batch:
            raise ValueError(f"MetricAccumulator.update: {len(clip_ids)} clip_ids for a batch of {batch}")
        rows: list[dict[str, float]] = [{} for _ in range(batch)]
        if pred_points is not None:
            if gt_points is None or gt_conf is None:
                raise ValueError("MetricAccumulator.update: pred_points needs gt_points and gt_conf")
            pe = point_errors(pred_points, gt_points, gt_conf, valid, self.top_fraction)
            for k, v in pe.as_dict().items():
                for b in range(batch):
                    rows[b][k] = float(v[b])
            if self.chamfer:
                for k, v in chamfer_metrics(pe.aligned, gt_points, valid).items():
                    for b in range(batch):
                        rows[b][k] = float(v[b])
        if pred_depth is not None:
            if gt_depth is None:
                raise ValueError("MetricAccumulator.update: pred_depth needs gt_depth")
            for k, v in depth_metrics(pred_depth, gt_depth, valid, gt_conf).items():
                for b in range(batch):
                    rows[b][k] = float(v[b])
        if pred_extrinsics is not None:
            if gt_extrinsics is None:
                raise ValueError("MetricAccumulator.update: pred_extrinsics needs gt_extrinsics")
            start = len(self.camera)
            self.camera.update(pred_extrinsics, gt_extrinsics)
            for b, m in enumerate(self.camera.per_clip()[start:]):
                rows[b].update(m)
                self._camera_rows.append(len(self._clips) + b)
        for b in range(batch):
            self._ids.append(str(clip_ids[b]) if clip_ids is not None else str(len(self._clips)))
            self._clips.append(rows[b])

    def per_clip(self) -> list[tuple[str, dict[str, float]]]:
        """``(clip_id, metrics)`` for every clip in update order."""
        return list(zip(self._ids, self._clips))

    def _names(self) -> list[str]:
        names: list[str] = []
        for row in self._clips:
            names += [k for k in row if k not in names]
        return names

    def compute(self) -> dict[str, float]:
        if not self._clips:
            raise ValueError("MetricAccumulator.compute: no clips were added")
        out: dict[str, float] = {}
        camera_keys = set()
        if len(self.camera):
            cam = self.camera.compute()
            camera_keys = set(cam)
            out.update(cam)
        for name in self._names():
            if name in camera_keys:
                continue
            vals = np.array([row.get(name, math.nan) for row in self._clips], dtype=np.float64)
            finite = np.isfinite(vals)
            out[name] = float(vals[finite].mean()) if finite.any() else math.nan
            if not finite.all():
                out[f"skipped_{name}"] = float((~finite).sum())
        out["num_clips"] = float(len(self._clips))
        return out

    def intervals(self, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict[str, CI]:
        """Bootstrap interval over clips of the mean of each per-clip metric.

        For clean camera AUCs the mean over clips equals the pooled value
        (same number of pairs per clip), so the interval is for the reported
        number; for ``compat="reference"`` it is an interval of the per-clip
        mean, an approximation of the per-batch mean.
        """
        return {
            name: bootstrap_ci([row.get(name, math.nan) for row in self._clips], confidence, n_resamples, seed)
            for name in self._names()
        }
