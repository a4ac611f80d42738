"""Metrics: pure functions on tensors, each definition in its module's docstring.

* :mod:`vidprobe.metrics.modes` - ``compat="clean"`` / ``"reference"``: every
  difference between the two as a named setting, and what a *failed clip*
  (non-finite prediction) scores.
* :mod:`vidprobe.metrics.camera` - relative pose errors, AUC@k, RRA/RTA
  (clean: gauge-invariant VGGT definition; reference: the release's numbers),
  :class:`CameraMetricAccumulator`.
* :mod:`vidprobe.metrics.points` - Sim(3)-aligned Point Err (confidence
  weighted; the table shows x10) and its unweighted version;
  accuracy / completeness / Chamfer.
* :mod:`vidprobe.metrics.depth` - the study's Depth Err; AbsRel, RMSE,
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
from vidprobe.metrics.modes import CLEAN, COMPAT_MODES, REFERENCE, MetricSettings, resolve_settings, settings_table
from vidprobe.metrics.points import TABLE_SCALE, chamfer_metrics, point_errors, top_confidence_mask
from vidprobe.metrics.stats import CI, bootstrap_ci, mean_ci_t

__all__ = [
    "ACC_THRESHOLDS",
    "AUC_THRESHOLDS",
    "CLEAN",
    "COMPAT_MODES",
    "FAILURE_COUNTS",
    "REFERENCE",
    "TABLE_SCALE",
    "CI",
    "CameraMetricAccumulator",
    "MetricAccumulator",
    "MetricSettings",
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
    "resolve_settings",
    "settings_table",
    "top_confidence_mask",
]


#: the per-family failure counts of :meth:`MetricAccumulator.compute` (always present, 0 when none)
FAILURE_COUNTS = ("failed_clips", "failed_points", "failed_depth", "failed_camera")
#: metrics whose split mean keeps NaN in reference mode (the release's batch mean is NaN: tests/test_parity_metrics.py)
_RELEASE_DENSE = ("point_err", "depth_err")


class MetricAccumulator:
    """Per-clip point, depth and camera metrics over a split, with aggregates and intervals.

    ``update(...)`` takes one batch of clips (leading ``B``; any argument may
    be ``None`` to skip that family):

    * ``pred_points [B,S,H,W,3]``, ``gt_points``; ``gt_conf [B,S,H,W]``;
      ``valid [B,S,H,W]`` (defaults to all pixels)
    * ``pred_depth [B,S,H,W]``, ``gt_depth``
    * ``pred_extrinsics [B,S,3,4]``, ``gt_extrinsics``
    * ``clip_ids``: ``B`` names (default: running index)

    All in the normalised GT frame. ``compat`` (``"clean"``, ``"reference"``
    or a :class:`MetricSettings`) selects every definition
    (:mod:`vidprobe.metrics.modes`). Aggregates (``compute``): points and
    depth are means over clips of the per-clip values. A failed clip (NaN/Inf
    prediction) stays in the mean with its stated value (clean: ``+inf``
    errors, 0 fractions); a clip that cannot be scored (no valid GT pixel,
    NaN) is left out and counted in ``skipped_<metric>`` (present only when
    non-zero); in reference mode a NaN Point Err / Depth Err makes the split
    mean NaN, as the release's batch mean is (and so its epoch mean). Camera metrics come from
    :class:`CameraMetricAccumulator` (``camera_batch_size`` overrides the
    mode's per-batch grouping). ``failed_clips``, ``failed_points``,
    ``failed_depth``, ``failed_camera`` count failed clips (always present).
    ``chamfer=True`` adds acc/comp/chamfer (slower).
    """

    def __init__(
        self,
        compat: str | MetricSettings = "clean",
        camera_batch_size: int | None = None,
        chamfer: bool = False,
        top_fraction: float = 0.25,
    ) -> None:
        self.settings = resolve_settings(compat)
        self.camera = CameraMetricAccumulator(compat=self.settings, batch_size=camera_batch_size)
        self.chamfer = chamfer
        self.top_fraction = top_fraction
        self._clips: list[dict[str, float]] = []
        self._ids: list[str] = []
        self._failed: list[set[str]] = []  # per clip: the families that failed

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
        st = self.settings
        rows: list[dict[str, float]] = [{} for _ in range(batch)]
        failed: list[set[str]] = [set() for _ in range(batch)]
        if pred_points is not None:
            if gt_points is None or gt_conf is None:
                raise ValueError("MetricAccumulator.update: pred_points needs gt_points and gt_conf")
            pe = point_errors(pred_points, gt_points, gt_conf, valid, self.top_fraction, compat=st)
            for b in range(batch):
                if bool(pe.failed[b]):
                    failed[b].add("points")
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
            bad = ~torch.isfinite(pred_depth).flatten(1).all(1)
            for b in range(batch):
                if bool(bad[b]):
                    failed[b].add("depth")
            for k, v in depth_metrics(pred_depth, gt_depth, valid, gt_conf, compat=st).items():
                for b in range(batch):
                    rows[b][k] = float(v[b])
        if pred_extrinsics is not None:
            if gt_extrinsics is None:
                raise ValueError("MetricAccumulator.update: pred_extrinsics needs gt_extrinsics")
            start = len(self.camera)
            self.camera.update(pred_extrinsics, gt_extrinsics)
            for b, (m, bad_cam) in enumerate(zip(self.camera.per_clip()[start:], self.camera.failed()[start:])):
                rows[b].update(m)
                if bad_cam:
                    failed[b].add("camera")
        for b in range(batch):
            self._ids.append(str(clip_ids[b]) if clip_ids is not None else str(len(self._clips)))
            self._clips.append(rows[b])
            self._failed.append(failed[b])

    def per_clip(self) -> list[tuple[str, dict[str, float]]]:
        """``(clip_id, metrics)`` for every clip in update order (``failed``: 1.0 for a failed clip)."""
        return [(cid, {**row, "failed": float(bool(f))}) for cid, row, f in zip(self._ids, self._clips, self._failed)]

    def failed_clips(self) -> dict[str, list[str]]:
        """``{clip_id: [families that failed]}`` for every failed clip."""
        return {cid: sorted(f) for cid, f in zip(self._ids, self._failed) if f}

    def _names(self) -> list[str]:
        names: list[str] = []
        for row in self._clips:
            names += [k for k in row if k not in names]
        return names

    def _keeps_nan(self, name: str) -> bool:
        return self.settings.nonfinite_predictions == "release" and name in _RELEASE_DENSE

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
            if self._keeps_nan(name):
                out[name] = float(vals.mean())
                continue
            scored = ~np.isnan(vals)  # +inf (a failed clip) is scored, NaN (nothing to score) is not
            with np.errstate(invalid="ignore"):
                out[name] = float(vals[scored].mean()) if scored.any() else math.nan
            if not scored.all():
                out[f"skipped_{name}"] = float((~scored).sum())
        out["num_clips"] = float(len(self._clips))
        out["failed_clips"] = float(sum(bool(f) for f in self._failed))
        for fam in ("points", "depth", "camera"):
            out[f"failed_{fam}"] = float(sum(fam in f for f in self._failed))
        return out

    def intervals(self, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict[str, CI]:
        """Bootstrap interval over clips of the mean of each per-clip metric.

        Failed clips' ``+inf`` values are resampled like any other (an interval
        reaches ``+inf`` when enough resamples contain one); clips with NaN
        (nothing to score) are dropped, except for reference-mode Point Err /
        Depth Err, whose interval is NaN when a clip is NaN (so is the mean).
        For clean camera AUCs the mean over clips equals the pooled value
        (same number of pairs per clip), so the interval is for the reported
        number; for ``compat="reference"`` it is an interval of the per-clip
        mean, an approximation of the per-batch mean.
        """
        out: dict[str, CI] = {}
        for name in self._names():
            vals = [row.get(name, math.nan) for row in self._clips]
            if self._keeps_nan(name) and any(math.isnan(v) for v in vals):
                out[name] = CI(math.nan, math.nan, math.nan, 0, len(vals))
                continue
            out[name] = bootstrap_ci(vals, confidence, n_resamples, seed, keep_inf=True)
        return out
