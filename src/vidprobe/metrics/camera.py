"""Camera pose metrics: relative pose errors over frame pairs, AUC, RRA/RTA.

Inputs are world->camera extrinsics ``[..., S, 3, 4]`` (OpenCV; decode a
predicted pose encoding with :func:`vidprobe.geometry.decode_pose` first),
prediction and ground truth for the same ``S`` frames of a clip. The ground
truth must be finite (a ``ValueError`` names it otherwise); the prediction may
not be (see "Non-finite predictions").

Two variants, selected by ``compat`` (the named settings are in
:mod:`vidprobe.metrics.modes`):

``compat="clean"`` (default, the gauge-invariant definition VGGT evaluates with)
    For every pair of frames ``i < j`` the relative pose is
    ``P_ij = P_i P_j^{-1}`` (camera ``j`` -> camera ``i``), which does not
    depend on the choice of world frame: replacing every ``P_k`` by
    ``P_k G`` for any rigid (or similarity) ``G`` leaves it unchanged.

    * rotation error: geodesic angle between the predicted and GT relative
      rotations, ``arccos((tr(R_pred^T R_gt) - 1) / 2)`` (via roma), degrees;
    * translation error: angle between the predicted and GT relative
      translation *directions*, sign folded: ``min(a, 180 - a)``, so it lies
      in ``[0, 90]`` degrees (the scale and the sign of a translation are not
      observable from two views);
    * degenerate translations (norm below ``eps = 1e-9`` in the normalised
      scene): if both are degenerate the translation error is 0 (both say
      "no baseline"); if only one is, it is 90 degrees (the worst value a
      sign-folded angle can take). No NaN can come out.
    * pair error = ``max(rotation error, translation error)``;
    * ``AUC@k`` (k in 3, 5, 10, 15, 30): VGGT's definition: a histogram of
      the pair errors of the *whole split pooled* with ``k`` bins of 1 degree
      over ``[0, k]`` (``numpy.histogram`` semantics: bins closed on the left,
      the last one also on the right), its cumulative sum divided by the
      number of pairs, averaged over the ``k`` bins. Equivalently the mean
      over pairs of ``(1/k) * #{b in 1..k : e < b}`` (``e = k`` counts in the
      last bin). Errors above ``k`` count as failures. Uniform errors of
      exactly 15 degrees give ``AUC@30 = 0.5``.
    * ``RRA@k`` / ``RTA@k`` (k in 5, 15): fraction of pooled pairs whose
      rotation / translation error is ``< k`` degrees.

``compat="reference"`` (the release's ``batched_se3_to_relative_pose_error``,
``calculate_auc`` and ``camera_loss(return_metrics=True)``; proven by
``tests/test_parity_metrics.py``)
    * pairs ``i < j`` with relative pose ``inv(P_i) P_j`` on world->camera
      matrices. This is *not* invariant to a change of world frame; it is
      meaningful only because prediction and GT are both anchored at frame 0
      (``P_0 = I``), which the probe and the GT normalisation guarantee;
    * the rotation angle as the release computes it, from quaternions:
      each relative rotation is converted with the largest-denominator
      (Shepperd) method, without renormalising, and the error is
      ``arccos(1 - 2 max(1 - (q_p.q_g)^2, 1e-15))``. For exact rotations this
      is the geodesic angle (floored at 4e-6 degrees); for the slightly
      non-orthonormal rotations decoded in float32 it differs from the
      trace-based geodesic angle by up to ~1e-3 degree near zero;
    * translation directions normalised as ``t / (|t| + 1e-15)`` with no
      threshold, angle ``arccos(sqrt(1 - max(1 - (u.v)^2, 1e-15)))`` (sign
      folded by construction): a zero vector gives 90 degrees, a vector of
      norm 1e-12 its true direction;
    * a histogram of the pair errors with **31 equal bins over [0, 30]**
      (``torch.histc(bins=31, min=0, max=30)``: bins of 30/31 degree, values
      above 30 dropped = failures), normalised by the number of pairs;
      ``AUC@k`` = mean of the first ``k`` cumulative bin fractions;
    * computed **per validation batch** (``batch_size`` consecutive clips, 10
      in the reference, i.e. 60 pairs for 4 frames) and averaged over
      batches weighted by the number of clips in each batch (Lightning's
      ``on_epoch`` mean with ``batch_size``). ``RRA@k``/``RTA@k`` are likewise
      per-batch fractions of pairs with error ``< k``, averaged over batches.
      Since AUC and RRA/RTA are means over pairs, this weighted per-batch mean
      equals pooling all pairs whenever every clip has the same number of
      frames; the batching matters only for clips of different lengths.

Non-finite predictions
    A failed pair has rotation and/or translation error ``+inf``: it counts
    as a failure in every AUC, RRA and RTA and lands in no histogram bin.
    ``clean``: a clip whose predicted extrinsics contain any NaN/Inf fails
    as a whole (every pair, both errors). ``reference``: pair by pair, as the
    release's 4x4 product ``inv(P_i) P_j`` turns NaN: the rotation fails when
    ``R_i``, ``t_i`` or ``R_j`` is non-finite (``inv(P_i)``'s translation
    enters the rotation block multiplied by 0), the translation when ``R_i``,
    ``t_i`` or ``t_j`` is (the release then sets 1e6 radians).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import roma
import torch

from vidprobe.geometry import compose_extrinsics, invert_extrinsics, relative_extrinsics
from vidprobe.metrics.modes import COMPAT_MODES, MetricSettings, resolve_settings
from vidprobe.metrics.spec import ACCURACY, MetricSpec

__all__ = [
    "AUC_THRESHOLDS",
    "ACC_THRESHOLDS",
    "COMPAT_MODES",
    "pair_indices",
    "rotation_error_deg",
    "translation_error_deg",
    "relative_pose_errors",
    "auc_pooled",
    "auc_reference",
    "reference_histogram",
    "camera_metrics",
    "CameraMetricAccumulator",
]

AUC_THRESHOLDS: tuple[int, ...] = (3, 5, 10, 15, 30)
ACC_THRESHOLDS: tuple[int, ...] = (5, 15)

#: the camera metrics this module computes, as the report shows them (gathered by vidprobe.metrics.registry)
METRIC_SPECS: tuple[MetricSpec, ...] = (
    *(MetricSpec(f"auc_{k}", f"AUC@{k}", "camera", ACCURACY, radar=k in (5, 30)) for k in AUC_THRESHOLDS),
    *(MetricSpec(f"rra_{k}", f"RRA@{k}", "camera", ACCURACY, radar=k == 15) for k in ACC_THRESHOLDS),
    *(MetricSpec(f"rta_{k}", f"RTA@{k}", "camera", ACCURACY, radar=k == 15) for k in ACC_THRESHOLDS),
)
DEGENERATE_EPS = 1e-9
RELEASE_NORM_EPS = 1e-15  # t / (|t| + eps) and the clamp of 1 - cos^2, as the release writes them
_REF_BINS = 31
_REF_MAX = 30.0
_TRANSLATION_RULES = {"clean": "degenerate_threshold", "reference": "release_eps",
                      "degenerate_threshold": "degenerate_threshold", "release_eps": "release_eps"}


def _settings(compat) -> MetricSettings:
    try:
        return resolve_settings(compat)
    except ValueError as e:
        raise ValueError(f"camera metrics: {e}") from None


def _check_ext(name: str, ext: torch.Tensor, finite: bool) -> None:
    if not isinstance(ext, torch.Tensor):
        raise TypeError(f"camera metrics: {name} must be a torch.Tensor, got {type(ext).__name__}")
    if ext.dim() < 3 or tuple(ext.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"camera metrics: {name} must be [..., S, 3, 4] (or 4x4), got {tuple(ext.shape)}")
    if finite and not torch.isfinite(ext[..., :3, :]).all():
        raise ValueError(f"camera metrics: {name} contains NaN or Inf (ground truth must be finite)")


def pair_indices(num_frames: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(i, j)`` with ``i < j`` in lexicographic order (6 pairs for 4 frames)."""
    if num_frames < 2:
        raise ValueError(f"camera metrics: need at least 2 frames for pairs, got {num_frames}")
    ij = torch.combinations(torch.arange(num_frames, device=device), 2)
    return ij[:, 0], ij[:, 1]


def _quaternion_largest_denominator(R: torch.Tensor) -> torch.Tensor:
    """``(w, x, y, z)`` of ``R [..., 3, 3]`` by the largest-denominator (Shepperd) method, not renormalised.

    The four expressions ``4 w^2 = 1 + m00 + m11 + m22``, ``4 x^2 = 1 + m00 - m11 - m22``, ... give
    ``|w|, |x|, |y|, |z|``; the component with the largest one (the best-conditioned) is taken from
    its square root and the other three from the off-diagonal sums divided by it (denominators
    floored at 0.1). For a non-orthonormal ``R`` the result is not exactly a unit quaternion.
    """
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    a = torch.sqrt(sq.clamp_min(0.0))  # 2|w|, 2|x|, 2|y|, 2|z|
    rows = torch.stack([
        torch.stack([a[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, a[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, a[..., 2] ** 2, m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, a[..., 3] ** 2], -1),
    ], -2)  # row k: 4 q q_k
    rows = rows / (2.0 * a.clamp_min(0.1))[..., None]
    k = a.argmax(-1, keepdim=True)
    return torch.gather(rows, -2, k[..., None].expand(*k.shape, 4)).squeeze(-2)


def rotation_error_deg(R_pred: torch.Tensor, R_gt: torch.Tensor, rule: str = "geodesic") -> torch.Tensor:
    """Angle (degrees) between rotation matrices ``[..., 3, 3]``.

    ``rule="geodesic"``: from the trace (roma). ``rule="release_quaternion"``: between quaternions
    (:func:`_quaternion_largest_denominator`), ``arccos(1 - 2 max(1 - (q_p.q_g)^2, 1e-15))``.
    """
    if rule == "geodesic":
        return torch.rad2deg(roma.rotmat_geodesic_distance(R_pred.double(), R_gt.double()))
    if rule != "release_quaternion":
        raise ValueError(f"rotation_error_deg: rule must be 'geodesic' or 'release_quaternion', got {rule!r}")
    qp, qg = _quaternion_largest_denominator(R_pred.double()), _quaternion_largest_denominator(R_gt.double())
    s = (1.0 - (qp * qg).sum(-1) ** 2).clamp_min(RELEASE_NORM_EPS)
    return torch.rad2deg(torch.acos(1.0 - 2.0 * s))


def translation_error_deg(
    t_pred: torch.Tensor, t_gt: torch.Tensor, rule: str = "clean", eps: float = DEGENERATE_EPS
) -> torch.Tensor:
    """Sign-folded angle (degrees, in ``[0, 90]``) between translation directions ``[..., 3]``.

    ``rule="degenerate_threshold"`` (or ``"clean"``): ``min(a, 180 - a)`` with
    ``a`` the angle between the vectors; both norms ``< eps`` -> 0, exactly
    one -> 90. ``rule="release_eps"`` (or ``"reference"``): the release's
    ``u = t / (|t| + 1e-15)``, ``arccos(sqrt(1 - max(1 - (u.v)^2, 1e-15)))``,
    no threshold (a zero vector gives 90).
    """
    if rule not in _TRANSLATION_RULES:
        raise ValueError(f"translation_error_deg: rule must be one of {sorted(_TRANSLATION_RULES)}, got {rule!r}")
    tp, tg = t_pred.double(), t_gt.double()
    np_, ng = tp.norm(dim=-1), tg.norm(dim=-1)
    if _TRANSLATION_RULES[rule] == "release_eps":
        u = tp / (np_[..., None] + RELEASE_NORM_EPS)
        v = tg / (ng[..., None] + RELEASE_NORM_EPS)
        s = (1.0 - (u * v).sum(-1) ** 2).clamp_min(RELEASE_NORM_EPS)
        return torch.rad2deg(torch.acos(torch.sqrt(1.0 - s)))
    cos = ((tp * tg).sum(-1) / (np_ * ng).clamp_min(1e-300)).abs().clamp(0.0, 1.0)
    ang = torch.rad2deg(torch.acos(cos))
    dp, dg = np_ < eps, ng < eps
    ang = torch.where(dp & dg, torch.zeros_like(ang), ang)
    return torch.where(dp ^ dg, torch.full_like(ang, 90.0), ang)


def _pair_relative(ext: torch.Tensor, i: torch.Tensor, j: torch.Tensor, pairs: str) -> torch.Tensor:
    e = ext[..., :3, :].double()
    ei, ej = e[..., i, :, :], e[..., j, :, :]
    if pairs == "gauge_invariant":
        return relative_extrinsics(ei, ej)  # P_i P_j^{-1}
    return compose_extrinsics(invert_extrinsics(ei), ej)  # inv(P_i) P_j


def _failed_pairs(pred_ext: torch.Tensor, i: torch.Tensor, j: torch.Tensor, st: MetricSettings):
    """``(rotation failed, translation failed)`` per pair ``[..., P]`` (see "Non-finite predictions")."""
    e = pred_ext[..., :3, :]
    bad_R = ~torch.isfinite(e[..., :3]).flatten(-2).all(-1)  # [..., S]
    bad_t = ~torch.isfinite(e[..., 3]).all(-1)
    if st.camera_nonfinite == "fail_clip":
        clip = (bad_R | bad_t).any(-1, keepdim=True).expand(*bad_R.shape[:-1], i.numel())
        return clip, clip
    Ri, ti, Rj, tj = bad_R[..., i], bad_t[..., i], bad_R[..., j], bad_t[..., j]
    if st.camera_pairs == "release":  # inv(P_i) P_j as a 4x4 product: [A B + a 0 | A b + a]
        return Ri | ti | Rj, Ri | ti | tj
    return Ri | Rj, Ri | ti | Rj | tj  # P_i P_j^-1 = [R_i R_j^T | t_i - R_i R_j^T t_j]


def relative_pose_errors(
    pred_ext: torch.Tensor, gt_ext: torch.Tensor, compat: str | MetricSettings = "clean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation errors (degrees, float64) for every pair ``i < j``.

    ``pred_ext``, ``gt_ext``: ``[..., S, 3, 4]`` world->camera. Returns two
    tensors ``[..., S(S-1)/2]`` in the order of :func:`pair_indices`. The pair
    formula, the translation rule and the handling of non-finite predictions
    depend on ``compat`` (see the module docstring); failed pairs are ``+inf``.
    """
    st = _settings(compat)
    _check_ext("pred_ext", pred_ext, finite=False)
    _check_ext("gt_ext", gt_ext, finite=True)
    if pred_ext.shape[:-2] != gt_ext.shape[:-2]:
        raise ValueError(
            f"camera metrics: pred_ext {tuple(pred_ext.shape)} and gt_ext {tuple(gt_ext.shape)} differ in shape"
        )
    i, j = pair_indices(pred_ext.shape[-3], device=pred_ext.device)
    fail_r, fail_t = _failed_pairs(pred_ext, i, j, st)
    safe = torch.nan_to_num(pred_ext.double(), nan=0.0, posinf=0.0, neginf=0.0)
    rel_p = _pair_relative(safe, i, j, st.camera_pairs)
    rel_g = _pair_relative(gt_ext, i, j, st.camera_pairs)
    r_err = rotation_error_deg(rel_p[..., :3, :3], rel_g[..., :3, :3], rule=st.rotation_angle)
    t_err = translation_error_deg(rel_p[..., :3, 3], rel_g[..., :3, 3], rule=st.translation_direction)
    inf = torch.full_like(r_err, float("inf"))
    return torch.where(fail_r, inf, r_err), torch.where(fail_t, inf, t_err)


def _as_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def auc_pooled(pair_errors, threshold: int) -> float:
    """VGGT's AUC@threshold over pooled pair errors (degrees): 1-degree bins, see module docstring."""
    e = _as_np(pair_errors)
    if e.size == 0:
        raise ValueError("auc_pooled: no pair errors")
    if threshold < 1 or int(threshold) != threshold:
        raise ValueError(f"auc_pooled: threshold must be a positive integer, got {threshold}")
    hist, _ = np.histogram(e, bins=np.arange(int(threshold) + 1, dtype=np.float64))
    return float(np.mean(np.cumsum(hist / e.size)))


def reference_histogram(pair_errors) -> torch.Tensor:
    """The release's normalised histogram: 31 equal bins over ``[0, 30]`` (``torch.histc``), / #pairs.

    The errors are binned in float32, as the release bins them; ``+inf`` and
    NaN fall in no bin (failures).
    """
    e = pair_errors if isinstance(pair_errors, torch.Tensor) else torch.as_tensor(np.asarray(pair_errors))
    e = e.detach().reshape(-1).float().cpu()
    if e.numel() == 0:
        raise ValueError("reference_histogram: no pair errors")
    return torch.histc(e, bins=_REF_BINS, min=0.0, max=_REF_MAX).double() / e.numel()


def auc_reference(pair_errors, threshold: int) -> float:
    """The release's AUC@threshold on one batch of pair errors: mean of the first k cumulative bins."""
    if not 1 <= threshold <= _REF_BINS:
        raise ValueError(f"auc_reference: threshold must be in 1..{_REF_BINS}, got {threshold}")
    hist = reference_histogram(pair_errors)
    return float(torch.cumsum(hist[: int(threshold)], 0).mean())


def _metrics_from_errors(
    r_err, t_err, auc: str, auc_thresholds: Sequence[int], acc_thresholds: Sequence[int]
) -> dict[str, float]:
    r, t = _as_np(r_err), _as_np(t_err)
    e = np.maximum(r, t)
    out: dict[str, float] = {}
    for k in auc_thresholds:
        out[f"auc_{k}"] = auc_pooled(e, k) if auc == "pooled_1deg" else auc_reference(e, k)
    for k in acc_thresholds:
        out[f"rra_{k}"] = float(np.mean(r < k))
        out[f"rta_{k}"] = float(np.mean(t < k))
    return out


def camera_metrics(
    pred_ext: torch.Tensor,
    gt_ext: torch.Tensor,
    compat: str | MetricSettings = "clean",
    auc_thresholds: Sequence[int] = AUC_THRESHOLDS,
    acc_thresholds: Sequence[int] = ACC_THRESHOLDS,
) -> dict[str, float]:
    """Camera metrics over all pairs of all clips given, pooled into one histogram.

    ``pred_ext``/``gt_ext``: ``[S,3,4]`` (one clip) or ``[B,S,3,4]``. With
    ``compat="reference"`` the ``B`` clips form *one* batch (the release's
    per-batch value); for split-level numbers use
    :class:`CameraMetricAccumulator`. Keys: ``auc_{k}``, ``rra_{k}``, ``rta_{k}``.
    """
    st = _settings(compat)
    r, t = relative_pose_errors(pred_ext, gt_ext, st)
    return _metrics_from_errors(r, t, st.camera_auc, auc_thresholds, acc_thresholds)


class CameraMetricAccumulator:
    """Collect pair errors clip by clip; compute split-level camera metrics.

    ``compat="clean"``: every pair of every clip pooled into one histogram
    (VGGT). ``compat="reference"``: consecutive groups of ``batch_size``
    clips (in ``update`` order, like a non-shuffled DataLoader) each give a
    value; the split value is their mean weighted by clips per batch (the
    last batch may be short): what Lightning's ``on_epoch`` mean with ``batch_size`` computes from the
    release's per-batch values (those are checked against the release in ``tests/test_parity_metrics.py``).
    ``batch_size=None`` takes the mode's ``camera_batch_size`` (None = pooled,
    10 = the release's validation batch); an integer forces per-batch means.

    ``update(pred_ext, gt_ext)`` takes one clip ``[S,3,4]`` or a batch
    ``[B,S,3,4]``; clips may have different ``S``. ``compute()`` returns
    ``{"auc_3", ..., "auc_30", "rra_5", "rra_15", "rta_5", "rta_15"}`` plus
    ``num_clips``, ``num_pairs`` and ``failed_camera`` (clips with a non-finite
    predicted camera). ``per_clip()`` returns the same metrics for each clip
    alone (the input for a bootstrap over clips; with equal ``S`` the mean of
    the clean per-clip AUCs equals the pooled AUC exactly, as AUC is a mean
    over pairs); ``failed()`` says which clips failed.
    """

    def __init__(
        self,
        compat: str | MetricSettings = "clean",
        batch_size: int | None = None,
        auc_thresholds: Sequence[int] = AUC_THRESHOLDS,
        acc_thresholds: Sequence[int] = ACC_THRESHOLDS,
    ) -> None:
        st = _settings(compat)
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"CameraMetricAccumulator: batch_size must be >= 1, got {batch_size}")
            st = st if st.camera_batch_size == batch_size else st.with_(camera_batch_size=int(batch_size), mode=st.mode)
        if st.camera_auc == "release_31bins" and any(k > _REF_BINS for k in auc_thresholds):
            raise ValueError(f"CameraMetricAccumulator: reference AUC thresholds must be <= {_REF_BINS}")
        self.settings = st
        self.compat = st.mode
        self.batch_size = st.camera_batch_size
        self.auc_thresholds = tuple(auc_thresholds)
        self.acc_thresholds = tuple(acc_thresholds)
        self._rot: list[np.ndarray] = []
        self._trans: list[np.ndarray] = []
        self._failed: list[bool] = []

    def reset(self) -> None:
        self._rot.clear()
        self._trans.clear()
        self._failed.clear()

    def __len__(self) -> int:
        return len(self._rot)

    def update(self, pred_ext: torch.Tensor, gt_ext: torch.Tensor) -> None:
        _check_ext("pred_ext", pred_ext, finite=False)
        if pred_ext.dim() == 3:
            pred_ext, gt_ext = pred_ext[None], gt_ext[None]
        if pred_ext.dim() != 4:
            raise ValueError(
                f"CameraMetricAccumulator.update: expected [S,3,4] or [B,S,3,4], got {tuple(pred_ext.shape)}"
            )
        r, t = relative_pose_errors(pred_ext, gt_ext, self.settings)
        bad = ~torch.isfinite(pred_ext[..., :3, :]).flatten(1).all(1)
        r_np, t_np = r.cpu().numpy(), t.cpu().numpy()
        for b in range(r_np.shape[0]):
            self._rot.append(r_np[b].copy())
            self._trans.append(t_np[b].copy())
            self._failed.append(bool(bad[b]))

    def _metrics(self, r: np.ndarray, t: np.ndarray) -> dict[str, float]:
        return _metrics_from_errors(r, t, self.settings.camera_auc, self.auc_thresholds, self.acc_thresholds)

    def compute(self) -> dict[str, float]:
        if not self._rot:
            raise ValueError("CameraMetricAccumulator.compute: no clips were added")
        n_pairs = int(sum(r.size for r in self._rot))
        if self.batch_size is None:
            out = self._metrics(np.concatenate(self._rot), np.concatenate(self._trans))
        else:
            sums: dict[str, float] = {}
            for start in range(0, len(self._rot), self.batch_size):
                stop = min(start + self.batch_size, len(self._rot))
                m = self._metrics(np.concatenate(self._rot[start:stop]), np.concatenate(self._trans[start:stop]))
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v * (stop - start)
            out = {k: v / len(self._rot) for k, v in sums.items()}
        out["num_clips"] = float(len(self._rot))
        out["num_pairs"] = float(n_pairs)
        out["failed_camera"] = float(sum(self._failed))
        return out

    def per_clip(self) -> list[dict[str, float]]:
        """Metrics of each clip alone (same definition as ``compute`` on a one-clip split/batch)."""
        return [self._metrics(r, t) for r, t in zip(self._rot, self._trans)]

    def failed(self) -> list[bool]:
        """For each clip in update order: did its predicted cameras contain NaN/Inf?"""
        return list(self._failed)

    def pair_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """All rotation and translation errors collected so far (degrees, ``+inf`` = failed), concatenated."""
        if not self._rot:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self._rot), np.concatenate(self._trans)
