"""Depth-map metrics: the study's Depth Err and the standard AbsRel / RMSE / delta<1.25.

Inputs: predicted depth ``[S,H,W]`` (or ``[B,S,H,W]``), GT depth in the same
normalised scene (rebased to frame 0 and divided by the scene scale), GT
confidence and a valid mask of the same shape. One value per clip (0-d tensor
for one clip, ``[B]`` for a batch).

**Depth Err** (the study's ``loss_depth`` at validation, the published
number): no per-sample alignment (the scene is already normalised), the mean
over pixels of the confidence-weighted absolute error, divided by the *pixel
count*, not by the sum of confidences (VGGT confidences are ``>= 1``, so it is
larger than a weighted mean).

* ``compat="clean"``: ``sum_{valid p} |d_pred - d_gt| c_gt / #valid pixels``.
* ``compat="reference"`` (the release's ``depth_loss`` with no mask, its
  configs leave ``use_mask`` off; proven by ``tests/test_parity_metrics.py``):
  every pixel counts, pixels vidprobe marks invalid enter with depth 0 and
  confidence 0 (what :func:`vidprobe.probe.losses.prepare_targets` hands
  over), so with holes the value is ``N_valid / N_all`` times the clean one.
  Each term is cleaned twice, as the release's ``check_and_fix_inf_nan``
  does: ``e = min(nan_to_0(|d_pred - d_gt|), 100)`` then
  ``min(nan_to_0(e c_gt), 100)``, NaN and +-Inf becoming 0.

**Standard metrics after per-clip median scaling** (valid pixels with
``d_gt > 0``, both modes): ``s = median(d_gt) / median(d_pred)`` over the
clip's valid pixels (all frames together; medians average the two middle
values, like ``numpy.median``), ``d = s * d_pred``, then

* ``abs_rel = mean(|d - d_gt| / d_gt)``
* ``rmse = sqrt(mean((d - d_gt)^2))``
* ``delta_1_25 = mean(max(d / d_gt, d_gt / d) < 1.25)``

These are invariant to a global scale of the prediction. A clip with no valid
pixel gives NaN (callers count and skip it). A clip whose predicted depth has
a NaN/Inf anywhere *fails* (:mod:`vidprobe.metrics.modes`): ``abs_rel``,
``rmse`` and, in clean mode, ``depth_err`` are ``+inf``, ``delta_1_25`` is 0;
reference mode keeps the release's Depth Err (non-finite terms count 0).
"""

from __future__ import annotations

import torch

from vidprobe.metrics.modes import MetricSettings, resolve_settings
from vidprobe.metrics.points import quantile_linear
from vidprobe.metrics.spec import ACCURACY, ERROR, MetricSpec

__all__ = ["METRIC_SPECS", "depth_error_reference", "median_scale", "depth_metrics"]

#: the depth metrics this module computes, as the report shows them (gathered by vidprobe.metrics.registry)
METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("depth_err", "Depth Err", "depth", ERROR, radar=True),
    MetricSpec("abs_rel", "AbsRel", "depth", ERROR, radar=True),
    MetricSpec("rmse", "RMSE", "depth", ERROR),
    MetricSpec("delta_1_25", "delta<1.25", "depth", ACCURACY),
)


def _prep(pred, gt, conf, valid):
    for name, x in (("pred_depth", pred), ("gt_depth", gt)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"depth metrics: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(f"depth metrics: {name} must be [S,H,W] or [B,S,H,W], got {tuple(x.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"depth metrics: pred_depth {tuple(pred.shape)} and gt_depth {tuple(gt.shape)} differ")
    for name, x in (("gt_conf", conf), ("valid", valid)):
        if x is not None and x.shape != pred.shape:
            raise ValueError(f"depth metrics: {name} must have shape {tuple(pred.shape)}, got {tuple(x.shape)}")
    single = pred.dim() == 3
    if single:
        pred, gt = pred[None], gt[None]
        conf = None if conf is None else conf[None]
        valid = None if valid is None else valid[None]
    if valid is None:
        valid = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    valid = valid.bool() & torch.isfinite(gt)
    return pred.double(), torch.nan_to_num(gt.double()), conf, valid, single


def _out(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def _clean_terms(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """NaN/Inf -> 0, then clamped to ``[-clamp, clamp]`` (the release's ``check_and_fix_inf_nan``)."""
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    return x if clamp is None else x.clamp(-clamp, clamp)


def depth_error_reference(
    pred_depth: torch.Tensor,
    gt_depth: torch.Tensor,
    gt_conf: torch.Tensor,
    valid: torch.Tensor | None = None,
    compat: str | MetricSettings = "clean",
) -> torch.Tensor:
    """The study's Depth Err per clip, in the chosen mode (module docstring)."""
    st = resolve_settings(compat)
    pred, gt, conf, valid, single = _prep(pred_depth, gt_depth, gt_conf, valid)
    if conf is None:
        raise ValueError("depth metrics: gt_conf is required")
    conf = conf.double()
    failed = ~torch.isfinite(pred).flatten(1).all(1)
    zero = torch.zeros((), dtype=torch.float64, device=pred.device)
    gt = torch.where(valid, gt, zero)
    if st.pixel_set == "all":
        conf = torch.where(valid, conf, zero)
        counted = torch.ones_like(valid)
    else:
        counted = valid
    release_terms = st.nonfinite_predictions == "release"
    e = (pred - gt).abs()
    if release_terms or st.depth_term_clamp is not None:
        e = _clean_terms(e, st.depth_term_clamp) if release_terms else e.clamp_max(st.depth_term_clamp)
    e = e * conf
    if release_terms or st.depth_term_clamp is not None:
        e = _clean_terms(e, st.depth_term_clamp) if release_terms else e.clamp_max(st.depth_term_clamp)
    e = torch.where(counted, e, zero)
    n = counted.flatten(1).sum(1).double()
    out = torch.where(n > 0, e.flatten(1).sum(1) / n.clamp_min(1), torch.full_like(n, float("nan")))
    if not release_terms:
        out = torch.where(failed, torch.full_like(out, float("inf")), out)
    return _out(out, single)


def _median(x: torch.Tensor) -> torch.Tensor:
    """Median with the two middle values averaged (numpy's), NaN for an empty tensor."""
    return quantile_linear(x, 0.5)


def median_scale(pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip factor ``median(d_gt) / median(d_pred)`` over valid pixels with ``d_gt > 0``."""
    pred, gt, _, valid, single = _prep(pred_depth, gt_depth, None, valid)
    valid = valid & (gt > 0)
    s = torch.stack([_median(gt[b][valid[b]]) / _median(pred[b][valid[b]]) for b in range(pred.shape[0])])
    return _out(s, single)


def depth_metrics(
    pred_depth: torch.Tensor,
    gt_depth: torch.Tensor,
    valid: torch.Tensor | None = None,
    gt_conf: torch.Tensor | None = None,
    compat: str | MetricSettings = "clean",
) -> dict[str, torch.Tensor]:
    """Per-clip ``abs_rel``, ``rmse``, ``delta_1_25`` after median scaling, plus ``depth_err`` when ``gt_conf`` is given."""
    pred, gt, _, valid_in, single = _prep(pred_depth, gt_depth, gt_conf, valid)
    out: dict[str, torch.Tensor] = {}
    if gt_conf is not None:
        ref = depth_error_reference(pred_depth, gt_depth, gt_conf, valid, compat)
        out["depth_err"] = ref[None] if single else ref
    v = valid_in & (gt > 0)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=pred.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=pred.device)
    abs_rel, rmse, delta = [], [], []
    for b in range(pred.shape[0]):
        g = gt[b][v[b]]
        p = pred[b][v[b]]
        if g.numel() == 0:
            abs_rel.append(nan)
            rmse.append(nan)
            delta.append(nan)
            continue
        if not torch.isfinite(pred[b]).all():  # a failed clip: the worst values (vidprobe.metrics.modes)
            abs_rel.append(inf)
            rmse.append(inf)
            delta.append(torch.zeros((), dtype=torch.float64, device=pred.device))
            continue
        d = (p * (_median(g) / _median(p))).clamp_min(1e-12)
        abs_rel.append(((d - g).abs() / g).mean())
        rmse.append(((d - g) ** 2).mean().sqrt())
        delta.append((torch.maximum(d / g, g / d) < 1.25).double().mean())
    out["abs_rel"] = torch.stack(abs_rel)
    out["rmse"] = torch.stack(rmse)
    out["delta_1_25"] = torch.stack(delta)
    return {k: _out(x, single) for k, x in out.items()}
