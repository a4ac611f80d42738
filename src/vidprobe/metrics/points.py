"""Point-map metrics: Sim(3)-aligned point error, accuracy / completeness / Chamfer.

Inputs follow the probe's outputs: predicted world points ``[S,H,W,3]``
(or ``[B,S,H,W,3]`` for a batch of clips) and GT points in the same
normalised frame (rebased to frame 0, unit scale), GT confidence
``[S,H,W]`` and a valid mask ``[S,H,W]``. Every function works clip by clip
and returns one value per clip (a 0-d tensor for one clip, ``[B]`` for a batch).

**Point Err** (the study's ``pmap_mse_aligned``; the published table shows it
multiplied by 10, this module returns the raw value). ``compat="clean"``:

1. fit set: valid pixels of the clip (all ``S`` frames together) whose GT
   confidence is ``>=`` the 75th percentile of the valid pixels' confidences
   (linear interpolation, ``numpy.percentile``'s default, in float64): the
   top 25%;
2. a Sim(3) (rotation, translation *and* scale; Umeyama's closed form via
   :func:`vidprobe.geometry.umeyama`, float64) fitted by unweighted least
   squares from the predicted to the GT points of the fit set; with fewer
   than 3 fit pixels no alignment is done (identity);
3. the transform applied to *all* predicted points, per-pixel Euclidean
   error ``e = |s R p + t - g|``;
4. ``point_err = sum(c e) / sum(c)`` over valid pixels (``c`` = GT
   confidence): a confidence-weighted mean.

``compat="reference"`` (the release's ``build_mask(thresh=0.75)``,
``align_pmaps`` and the weighted mean of ``validation_step``; proven by
``tests/test_parity_metrics.py``): every pixel takes part, as the release has
no valid mask (its configs leave ``use_mask`` off); pixels vidprobe marks
invalid enter with GT confidence 0 and GT point 0 (what
:func:`vidprobe.probe.losses.prepare_targets` hands over). So the 75th
percentile is over all pixels (computed and compared in float32, as
``numpy.percentile`` on the release's float32 confidences), and
``point_err = sum(c e) / (sum(c) + 1e-6)`` over all pixels.

**Clean Point Err** (``point_err_unweighted``, both modes): the same
alignment, then the plain mean of ``e`` over valid pixels.

A clip with no valid pixel gives NaN in clean mode (callers count and skip
it). A clip whose predicted points contain NaN/Inf anywhere *fails*: in clean
mode both errors are ``+inf`` and the alignment is the identity; in
reference mode Point Err is what the release computes (NaN: the NaN enters
the fit or the weighted sum) and the unweighted error is ``+inf``
(:mod:`vidprobe.metrics.modes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vidprobe.geometry import Sim3, apply_sim3, umeyama
from vidprobe.metrics.modes import MetricSettings, resolve_settings
from vidprobe.metrics.spec import ERROR, MetricSpec

__all__ = [
    "TABLE_SCALE",
    "quantile_linear",
    "top_confidence_mask",
    "top_confidence_mask_reference",
    "align_sim3",
    "PointErrors",
    "point_errors",
    "chamfer_metrics",
]

#: the point metrics this module computes, as the report shows them (gathered by vidprobe.metrics.registry)
METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("point_err", "Point Err", "points", ERROR, table_scale=10.0, radar=True),
    MetricSpec("point_err_unweighted", "Point Err unweighted", "points", ERROR),
)
CHAMFER_SPECS: tuple[MetricSpec, ...] = (  # chamfer_metrics (MetricAccumulator(chamfer=True))
    MetricSpec("acc", "Accuracy", "chamfer", ERROR),
    MetricSpec("comp", "Completeness", "chamfer", ERROR),
    MetricSpec("chamfer", "Chamfer", "chamfer", ERROR),
)

TABLE_SCALE = METRIC_SPECS[0].table_scale
"""The published table reports ``point_err * TABLE_SCALE`` (:mod:`vidprobe.metrics.registry`)."""


def quantile_linear(values: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile of all entries of ``values`` with linear interpolation (``numpy.percentile``'s default).

    Selection, not a full sort: ``numpy.quantile`` on CPU, two ``torch.kthvalue`` elsewhere. NaN if empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile_linear: q must be in [0, 1], got {q}")
    v = values.reshape(-1)
    if v.numel() == 0:
        return torch.tensor(float("nan"), dtype=values.dtype, device=values.device)
    if v.device.type == "cpu":
        return torch.tensor(np.quantile(v.double().numpy(), q), dtype=values.dtype)
    pos = q * (v.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, v.numel() - 1)
    frac = pos - lo
    a = torch.kthvalue(v, lo + 1).values.double()
    b = torch.kthvalue(v, hi + 1).values.double() if hi != lo else a
    return (a * (1 - frac) + b * frac).to(values.dtype)


def _check_points(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"point metrics: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[-1] != 3:
        raise ValueError(f"point metrics: {name} must be [S,H,W,3] or [B,S,H,W,3], got {tuple(x.shape)}")


def _check_map(name: str, x: torch.Tensor | None, shape: torch.Size) -> None:
    if x is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"point metrics: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def _prep(pred, gt, conf, valid):
    _check_points("pred_points", pred)
    _check_points("gt_points", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"point metrics: pred_points {tuple(pred.shape)} and gt_points {tuple(gt.shape)} differ")
    _check_map("gt_conf", conf, pred.shape[:-1])
    _check_map("valid", valid, pred.shape[:-1])
    single = pred.dim() == 4
    if single:
        pred, gt = pred[None], gt[None]
        conf = None if conf is None else conf[None]
        valid = None if valid is None else valid[None]
    if valid is None:
        valid = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device)
    valid = valid.bool() & torch.isfinite(gt).all(-1)
    return pred, gt, conf, valid, single


def top_confidence_mask(conf: torch.Tensor, valid: torch.Tensor | None = None, top_fraction: float = 0.25):
    """Valid pixels whose confidence is in the top ``top_fraction`` of the clip's valid pixels.

    ``conf [S,H,W]`` or ``[B,S,H,W]``; the threshold is the
    ``(1 - top_fraction)`` quantile over all frames of a clip, ties kept
    (``conf >= q``, the comparison of the release's ``build_mask``).
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_confidence_mask: top_fraction must be in (0, 1], got {top_fraction}")
    single = conf.dim() == 3
    c = conf[None] if single else conf
    v = torch.ones_like(c, dtype=torch.bool) if valid is None else (valid[None] if single else valid).bool()
    out = torch.zeros_like(v)
    for b in range(c.shape[0]):
        vals = c[b][v[b]]
        if vals.numel() == 0:
            continue
        q = quantile_linear(vals, 1.0 - top_fraction)
        out[b] = v[b] & (c[b] >= q)
    return out[0] if single else out


def top_confidence_mask_reference(conf: torch.Tensor, top_fraction: float = 0.25) -> torch.Tensor:
    """The release's fit set: ``conf >= numpy.percentile(conf, 100 (1 - top_fraction))`` over *all* pixels.

    ``conf [S,H,W]`` or ``[B,S,H,W]`` (per clip); the percentile is taken on
    the float32 values and compared in float32, as the release does on its
    float32 confidences (the threshold rounds to float32).
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_confidence_mask_reference: top_fraction must be in (0, 1], got {top_fraction}")
    single = conf.dim() == 3
    c = (conf[None] if single else conf).float()
    out = torch.zeros(c.shape, dtype=torch.bool, device=c.device)
    for b in range(c.shape[0]):
        q = np.percentile(c[b].reshape(-1).cpu().numpy(), 100.0 * (1.0 - top_fraction))
        out[b] = c[b] >= torch.tensor(q, dtype=torch.float32, device=c.device)
    return out[0] if single else out


def align_sim3(pred_points: torch.Tensor, gt_points: torch.Tensor, fit_mask: torch.Tensor) -> tuple[torch.Tensor, Sim3]:
    """Fit a Sim(3) from ``pred`` to ``gt`` on ``fit_mask`` pixels (per clip) and apply it to every pixel.

    Shapes ``[S,H,W,3]``/``[B,S,H,W,3]`` with ``fit_mask`` ``[S,H,W]``/``[B,S,H,W]``.
    Unweighted least squares on the fit pixels (roma's Umeyama through
    :func:`vidprobe.geometry.umeyama`, float64); a clip with fewer than 3 fit pixels keeps the
    identity; a fit set with a NaN/Inf gives a NaN transform. Returns ``(aligned points, Sim3)``.
    """
    single = pred_points.dim() == 4
    p = pred_points[None] if single else pred_points
    g = gt_points[None] if single else gt_points
    m = (fit_mask[None] if single else fit_mask).bool()
    B = p.shape[0]
    src = p.reshape(B, -1, 3)
    dst = g.reshape(B, -1, 3)
    m = m.reshape(B, -1)
    dt, dev = src.dtype, src.device
    scale = torch.ones(B, dtype=dt, device=dev)
    rotation = torch.eye(3, dtype=dt, device=dev).repeat(B, 1, 1)
    translation = torch.zeros(B, 3, dtype=dt, device=dev)
    for b in range(B):
        if int(m[b].sum()) < 3:
            continue  # too few points to fit: identity (the release's degeneracy guard, tested in parity)
        s_fit, d_fit = src[b][m[b]], dst[b][m[b]]
        if not (torch.isfinite(s_fit).all() and torch.isfinite(d_fit).all()):
            # a NaN/Inf in the fit spoils the transform (roma's SVD returns NaN on CPU; never run it on NaN)
            scale[b], rotation[b], translation[b] = math.nan, math.nan, math.nan
            continue
        fit = umeyama(s_fit, d_fit, with_scale=True)  # fit on the subset only: cheaper than weights
        scale[b], rotation[b], translation[b] = fit.scale, fit.rotation, fit.translation
    sim = Sim3(scale=scale, rotation=rotation, translation=translation)
    aligned = apply_sim3(sim, src).reshape(p.shape)
    if single:
        return aligned[0], Sim3(sim.scale[0], sim.rotation[0], sim.translation[0])
    return aligned, sim


@dataclass
class PointErrors:
    """Per-clip results of :func:`point_errors` (0-d tensors for one clip, ``[B]`` for a batch)."""

    point_err: torch.Tensor  # confidence-weighted, raw (x10 in the published table)
    point_err_unweighted: torch.Tensor  # plain mean over valid pixels
    aligned: torch.Tensor  # aligned predicted points, same shape as the input
    sim3: Sim3
    failed: torch.Tensor | None = None  # bool: the clip's predicted points have a NaN/Inf

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"point_err": self.point_err, "point_err_unweighted": self.point_err_unweighted}


def point_errors(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    gt_conf: torch.Tensor,
    valid: torch.Tensor | None = None,
    top_fraction: float = 0.25,
    compat: str | MetricSettings = "clean",
) -> PointErrors:
    """Point Err and its unweighted version per clip (the module docstring has both modes' definitions)."""
    st = resolve_settings(compat)
    pred, gt, conf, valid, single = _prep(pred_points, gt_points, gt_conf, valid)
    if conf is None:
        raise ValueError("point metrics: gt_conf is required")
    failed = ~torch.isfinite(pred).flatten(1).all(1)
    gt64 = torch.where(valid[..., None], gt.double(), torch.zeros((), dtype=torch.float64, device=gt.device))
    conf = conf.to(torch.float64)
    if st.pixel_set == "all":
        conf = torch.where(valid, conf, torch.zeros_like(conf))
        fit = top_confidence_mask_reference(conf, top_fraction) if st.fit_threshold_precision == "float32" \
            else top_confidence_mask(conf, None, top_fraction)
        counted = torch.ones_like(valid)
    else:
        fit = top_confidence_mask(conf, valid, top_fraction)
        counted = valid
    fail_clip = st.nonfinite_predictions == "fail_clip"
    if fail_clip:
        fit = fit & ~failed[:, None, None, None]  # a failed clip keeps the identity (its values are replaced)
    aligned, sim = align_sim3(pred.double(), gt64, fit)
    err = (aligned - gt64).norm(dim=-1)
    dims = (1, 2, 3)
    zero = torch.zeros((), dtype=torch.float64, device=err.device)
    w = torch.where(counted, conf, zero)
    n_valid = valid.sum(dims).double()
    nan = torch.full_like(n_valid, float("nan"))
    inf = torch.full_like(n_valid, float("inf"))
    weighted = (torch.where(counted, w * err, zero)).sum(dims) / (w.sum(dims) + st.point_weight_eps).clamp_min(1e-300)
    if st.pixel_set == "valid":
        weighted = torch.where(n_valid > 0, weighted, nan)
    plain = torch.where(n_valid > 0, torch.where(valid, err, zero).sum(dims) / n_valid.clamp_min(1), nan)
    plain = torch.where(failed, inf, plain)
    if fail_clip:
        weighted = torch.where(failed, inf, weighted)
    aligned = aligned.to(pred_points.dtype)
    if single:
        return PointErrors(weighted[0], plain[0], aligned[0], Sim3(sim.scale[0], sim.rotation[0], sim.translation[0]),
                           failed[0])
    return PointErrors(weighted, plain, aligned, sim, failed)


def _nn_dist(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each row of ``a [N,3]``, the distance to its nearest neighbour in ``b [M,3]`` (torch.cdist in chunks)."""
    out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    for s in range(0, a.shape[0], chunk):
        out[s : s + chunk] = torch.cdist(a[s : s + chunk], b).min(dim=1).values
    return out


def chamfer_metrics(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    valid: torch.Tensor | None = None,
    max_points: int = 20000,
    seed: int = 0,
    chunk: int = 2048,
) -> dict[str, torch.Tensor]:
    """Accuracy, completeness and Chamfer distance between point sets, per clip.

    Pass *aligned* predictions (e.g. ``point_errors(...).aligned``). The
    valid pixels of a clip give two unordered point sets; at most
    ``max_points`` pixels are drawn (the same pixels for both sets, seeded
    by ``seed``, without replacement). ``acc`` = mean distance from each
    predicted point to its nearest GT point; ``comp`` = mean distance from
    each GT point to its nearest predicted point; ``chamfer = (acc + comp) / 2``.
    Nearest neighbours are exact (``torch.cdist`` in chunks of ``chunk`` rows).
    A clip whose predicted points contain NaN/Inf anywhere gives ``+inf``.
    """
    pred, gt, _, valid, single = _prep(pred_points, gt_points, None, valid)
    gen = torch.Generator().manual_seed(seed)
    acc, comp = [], []
    for b in range(pred.shape[0]):
        idx = valid[b].reshape(-1).nonzero().squeeze(1)
        if not torch.isfinite(pred[b]).all():  # a failed clip: the worst value (vidprobe.metrics.modes)
            acc.append(float("inf"))
            comp.append(float("inf"))
            continue
        if idx.numel() == 0:
            acc.append(float("nan"))
            comp.append(float("nan"))
            continue
        if idx.numel() > max_points:
            sel = torch.randperm(idx.numel(), generator=gen)[:max_points].to(idx.device)
            idx = idx[sel]
        p = pred[b].reshape(-1, 3)[idx].double()  # float64: cdist's matrix-product path loses ~1e-4 in float32
        g = gt[b].reshape(-1, 3)[idx].double()
        acc.append(float(_nn_dist(p, g, chunk).double().mean()))
        comp.append(float(_nn_dist(g, p, chunk).double().mean()))
    a = torch.tensor(acc, dtype=torch.float64)
    c = torch.tensor(comp, dtype=torch.float64)
    out = {"acc": a, "comp": c, "chamfer": (a + c) / 2}
    return {k: v[0] for k, v in out.items()} if single else out
