"""Camera pose metrics: relative pose errors over frame pairs, AUC, RRA/RTA.

Inputs are world->camera extrinsics ``[..., S, 3, 4]`` (OpenCV; decode a
predicted pose encoding with :func:`vidprobe.geometry.decode_pose` first),
prediction and ground truth for the same ``S`` frames of a clip.

Two variants, selected by ``compat``:

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

``compat="reference"`` (reproduces the reference release's numbers)
    * pairs ``i < j`` with relative pose ``inv(P_i) P_j`` on world->camera
      matrices. This is *not* invariant to a change of world frame; it is
      meaningful only because prediction and GT are both anchored at frame 0
      (``P_0 = I``), which the probe and the GT normalisation guarantee;
    * same rotation / sign-folded translation angles; a zero-length
      translation gives 90 degrees (the release normalises with ``t/(|t|+eps)``,
      so a zero vector has a zero dot product with anything);
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
      frames; the batching matters only for clips of different lengths. What
      separates the two modes in practice is the pair formula and the bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import roma
import torch

from vidprobe.geometry import compose_extrinsics, invert_extrinsics, relative_extrinsics

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
COMPAT_MODES = ("clean", "reference")
DEGENERATE_EPS = 1e-9
_REF_BINS = 31
_REF_MAX = 30.0


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"camera metrics: compat must be one of {COMPAT_MODES}, got {compat!r}")


def _check_ext(name: str, ext: torch.Tensor) -> None:
    if not isinstance(ext, torch.Tensor):
        raise TypeError(f"camera metrics: {name} must be a torch.Tensor, got {type(ext).__name__}")
    if ext.dim() < 3 or tuple(ext.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"camera metrics: {name} must be [..., S, 3, 4] (or 4x4), got {tuple(ext.shape)}")
    if not torch.isfinite(ext).all():
        raise ValueError(f"camera metrics: {name} contains NaN or Inf")


def pair_indices(num_frames: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(i, j)`` with ``i < j`` in lexicographic order (6 pairs for 4 frames)."""
    if num_frames < 2:
        raise ValueError(f"camera metrics: need at least 2 frames for pairs, got {num_frames}")
    ij = torch.combinations(torch.arange(num_frames, device=device), 2)
    return ij[:, 0], ij[:, 1]


def rotation_error_deg(R_pred: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between rotation matrices ``[..., 3, 3]``."""
    return torch.rad2deg(roma.rotmat_geodesic_distance(R_pred.double(), R_gt.double()))


def translation_error_deg(
    t_pred: torch.Tensor, t_gt: torch.Tensor, degenerate: str = "clean", eps: float = DEGENERATE_EPS
) -> torch.Tensor:
    """Sign-folded angle (degrees, in ``[0, 90]``) between translation directions ``[..., 3]``.

    ``min(a, 180 - a)`` with ``a`` the angle between the two vectors.
    ``degenerate="clean"``: both norms ``< eps`` -> 0, exactly one -> 90.
    ``degenerate="reference"``: any norm ``< eps`` -> 90 (the release's behaviour).
    """
    tp, tg = t_pred.double(), t_gt.double()
    np_, ng = tp.norm(dim=-1), tg.norm(dim=-1)
    cos = ((tp * tg).sum(-1) / (np_ * ng).clamp_min(1e-300)).abs().clamp(0.0, 1.0)
    ang = torch.rad2deg(torch.acos(cos))
    dp, dg = np_ < eps, ng < eps
    if degenerate == "clean":
        ang = torch.where(dp & dg, torch.zeros_like(ang), ang)
        ang = torch.where(dp ^ dg, torch.full_like(ang, 90.0), ang)
    elif degenerate == "reference":
        ang = torch.where(dp | dg, torch.full_like(ang, 90.0), ang)
    else:
        raise ValueError(f"translation_error_deg: degenerate must be 'clean' or 'reference', got {degenerate!r}")
    return ang


def _pair_relative(ext: torch.Tensor, i: torch.Tensor, j: torch.Tensor, compat: str) -> torch.Tensor:
    e = ext[..., :3, :].double()
    ei, ej = e[..., i, :, :], e[..., j, :, :]
    if compat == "clean":
        return relative_extrinsics(ei, ej)  # P_i P_j^{-1}
    return compose_extrinsics(invert_extrinsics(ei), ej)  # inv(P_i) P_j


def relative_pose_errors(
    pred_ext: torch.Tensor, gt_ext: torch.Tensor, compat: str = "clean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation errors (degrees, float64) for every pair ``i < j``.

    ``pred_ext``, ``gt_ext``: ``[..., S, 3, 4]`` world->camera. Returns two
    tensors ``[..., S(S-1)/2]`` in the order of :func:`pair_indices`. The pair
    formula depends on ``compat`` (see the module docstring).
    """
    _check_compat(compat)
    _check_ext("pred_ext", pred_ext)
    _check_ext("gt_ext", gt_ext)
    if pred_ext.shape[:-2] != gt_ext.shape[:-2]:
        raise ValueError(
            f"camera metrics: pred_ext {tuple(pred_ext.shape)} and gt_ext {tuple(gt_ext.shape)} differ in shape"
        )
    i, j = pair_indices(pred_ext.shape[-3], device=pred_ext.device)
    rel_p = _pair_relative(pred_ext, i, j, compat)
    rel_g = _pair_relative(gt_ext, i, j, compat)
    r_err = rotation_error_deg(rel_p[..., :3, :3], rel_g[..., :3, :3])
    t_err = translation_error_deg(rel_p[..., :3, 3], rel_g[..., :3, 3], degenerate=compat)
    return r_err, t_err


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
    """The release's normalised histogram: 31 equal bins over ``[0, 30]`` (``torch.histc``), / #pairs."""
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
    r_err, t_err, compat: str, auc_thresholds: Sequence[int], acc_thresholds: Sequence[int]
) -> dict[str, float]:
    r, t = _as_np(r_err), _as_np(t_err)
    e = np.maximum(r, t)
    out: dict[str, float] = {}
    for k in auc_thresholds:
        out[f"auc_{k}"] = auc_pooled(e, k) if compat == "clean" else auc_reference(e, k)
    for k in acc_thresholds:
        out[f"rra_{k}"] = float(np.mean(r < k))
        out[f"rta_{k}"] = float(np.mean(t < k))
    return out


def camera_metrics(
    pred_ext: torch.Tensor,
    gt_ext: torch.Tensor,
    compat: str = "clean",
    auc_thresholds: Sequence[int] = AUC_THRESHOLDS,
    acc_thresholds: Sequence[int] = ACC_THRESHOLDS,
) -> dict[str, float]:
    """Camera metrics over all pairs of all clips given, pooled into one histogram.

    ``pred_ext``/``gt_ext``: ``[S,3,4]`` (one clip) or ``[B,S,3,4]``. With
    ``compat="reference"`` the ``B`` clips form *one* batch (the release's
    per-batch value); for split-level numbers use
    :class:`CameraMetricAccumulator`. Keys: ``auc_{k}``, ``rra_{k}``, ``rta_{k}``.
    """
    r, t = relative_pose_errors(pred_ext, gt_ext, compat)
    return _metrics_from_errors(r, t, compat, auc_thresholds, acc_thresholds)


class CameraMetricAccumulator:
    """Collect pair errors clip by clip; compute split-level camera metrics.

    ``compat="clean"``: every pair of every clip pooled into one histogram
    (VGGT). ``compat="reference"``: consecutive groups of ``batch_size``
    clips (in ``update`` order, like a non-shuffled DataLoader) each give a
    value; the split value is their mean weighted by clips per batch (the
    last batch may be short), as the release's Lightning logging does.

    ``update(pred_ext, gt_ext)`` takes one clip ``[S,3,4]`` or a batch
    ``[B,S,3,4]``; clips may have different ``S``. ``compute()`` returns
    ``{"auc_3", ..., "auc_30", "rra_5", "rra_15", "rta_5", "rta_15"}`` plus
    ``num_clips`` and ``num_pairs``. ``per_clip()`` returns the same metrics
    for each clip alone (the input for a bootstrap over clips; with equal
    ``S`` the mean of the clean per-clip AUCs equals the pooled AUC exactly,
    as AUC is a mean over pairs).
    """

    def __init__(
        self,
        compat: str = "clean",
        batch_size: int = 10,
        auc_thresholds: Sequence[int] = AUC_THRESHOLDS,
        acc_thresholds: Sequence[int] = ACC_THRESHOLDS,
    ) -> None:
        _check_compat(compat)
        if batch_size < 1:
            raise ValueError(f"CameraMetricAccumulator: batch_size must be >= 1, got {batch_size}")
        if compat == "reference" and any(k > _REF_BINS for k in auc_thresholds):
            raise ValueError(f"CameraMetricAccumulator: reference AUC thresholds must be <= {_REF_BINS}")
        self.compat = compat
        self.batch_size = int(batch_size)
        self.auc_thresholds = tuple(auc_thresholds)
        self.acc_thresholds = tuple(acc_thresholds)
        self._rot: list[np.ndarray] = []
        self._trans: list[np.ndarray] = []

    def reset(self) -> None:
        self._rot.clear()
        self._trans.clear()

    def __len__(self) -> int:
        return len(self._rot)

    def update(self, pred_ext: torch.Tensor, gt_ext: torch.Tensor) -> None:
        _check_ext("pred_ext", pred_ext)
        if pred_ext.dim() == 3:
            pred_ext, gt_ext = pred_ext[None], gt_ext[None]
        if pred_ext.dim() != 4:
            raise ValueError(
                f"CameraMetricAccumulator.update: expected [S,3,4] or [B,S,3,4], got {tuple(pred_ext.shape)}"
            )
        r, t = relative_pose_errors(pred_ext, gt_ext, self.compat)
        r_np, t_np = r.cpu().numpy(), t.cpu().numpy()
        for b in range(r_np.shape[0]):
            self._rot.append(r_np[b].copy())
            self._trans.append(t_np[b].copy())

    def _metrics(self, r: np.ndarray, t: np.ndarray) -> dict[str, float]:
        return _metrics_from_errors(r, t, self.compat, self.auc_thresholds, self.acc_thresholds)

    def compute(self) -> dict[str, float]:
        if not self._rot:
            raise ValueError("CameraMetricAccumulator.compute: no clips were added")
        n_pairs = int(sum(r.size for r in self._rot))
        if self.compat == "clean":
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
        return out

    def per_clip(self) -> list[dict[str, float]]:
        """Metrics of each clip alone (same definition as ``compute`` on a one-clip split/batch)."""
        return [self._metrics(r, t) for r, t in zip(self._rot, self._trans)]

    def pair_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """All rotation and translation errors collected so far (degrees), concatenated."""
        if not self._rot:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self._rot), np.concatenate(self._trans)
