"""Cross-view feature consistency: nearest-neighbour correspondence error from features.

For a pair of views (A, B) of a clip, with GT depth, cameras and the
backbone's feature maps of both views:

1. **Ground-truth correspondences.** Every valid pixel ``p`` of A (on a
   ``query_stride`` grid) is lifted to its world point (from A's depth and
   camera, or the GT world point map when given) and projected into B.
   It is kept when it lands in B's image (pixel centres at integer
   coordinates, the image covering ``[-0.5, W-0.5) x [-0.5, H-0.5)``), in
   front of the camera, and passes a depth test against B's depth at the
   nearest pixel: B's pixel is valid and ``|z_B(p) - d_B| <= depth_tol * d_B``
   (relative tolerance; otherwise the point is occluded in B, or B's depth
   there is unknown). ``q*`` is the exact (sub-pixel) projection.
2. **Feature matching.** Features are read *at pixel positions*: a
   feature grid ``[h, w, C]`` covers the whole image, and the feature at
   pixel ``(u, v)`` is its bilinear interpolation at ``((u + 0.5) / W,
   (v + 0.5) / H)`` (``grid_sample``, ``align_corners=False``; exact
   look-up when ``h, w == H, W``). For each kept pixel, the match ``q^`` is
   the pixel of B (on a ``candidate_stride`` grid; every pixel by default)
   whose feature has the highest cosine similarity with A's feature at
   ``p``.
3. **Scores.** Error ``|q^ - q*|`` in pixels; reported: mean and median
   error, ``PCK@t`` = fraction of correspondences with error ``<= t`` for
   pixel thresholds and for thresholds given as a fraction of the image
   diagonal ``sqrt(H^2 + W^2)``.

A pair with no visible correspondence gives NaN scores and
``num_queries = 0`` (callers skip it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidprobe.geometry import depth_to_world_points, project, world_to_cam
from vidprobe.metrics.spec import ACCURACY, ERROR, MetricSpec

__all__ = [
    "PX_THRESHOLDS",
    "FRAC_THRESHOLDS",
    "sample_features",
    "visible_correspondences",
    "match_features",
    "correspondence_errors",
    "summarize_correspondence",
    "correspondence_metrics",
    "clip_correspondence_metrics",
]

PX_THRESHOLDS: tuple[float, ...] = (1, 2, 5, 10, 20)
FRAC_THRESHOLDS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)

#: the consistency metrics this module computes, as the report shows them (gathered by vidprobe.metrics.registry)
METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("corr_err_px", "feature correspondence error", "consistency", ERROR, unit="px"),
    MetricSpec("corr_err_median_px", "median feature correspondence error", "consistency", ERROR, unit="px"),
    *(MetricSpec(f"pck_{t:g}px", f"PCK@{t:g}px", "consistency", ACCURACY) for t in PX_THRESHOLDS),
    *(MetricSpec(f"pck_{f:g}diag", f"PCK@{f:g} diagonal", "consistency", ACCURACY) for f in FRAC_THRESHOLDS),
)


def sample_features(features: torch.Tensor, uv: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear features ``[N, C]`` at pixel positions ``uv [N, 2]`` (u = column, v = row) of an ``H x W`` image.

    ``features [h, w, C]`` covers the whole image (cell centres at
    ``(k + 0.5) / w`` of the width); borders are clamped.
    """
    if features.dim() != 3:
        raise ValueError(f"correspondence: features must be [h,w,C], got {tuple(features.shape)}")
    H, W = image_hw
    grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], dim=-1)
    f = features.permute(2, 0, 1)[None].float()
    out = F.grid_sample(f, grid[None, None].float(), mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0, :].T  # [N, C]


@dataclass
class Correspondences:
    uv_a: torch.Tensor  # [N, 2] integer pixel positions in A (float dtype)
    uv_b: torch.Tensor  # [N, 2] exact projections into B (sub-pixel)
    num_candidates: int  # valid A pixels on the query grid before the visibility test


def visible_correspondences(
    depth_a: torch.Tensor,
    depth_b: torch.Tensor,
    intrinsics_a: torch.Tensor,
    intrinsics_b: torch.Tensor,
    extrinsics_a: torch.Tensor,
    extrinsics_b: torch.Tensor,
    valid_a: torch.Tensor | None = None,
    valid_b: torch.Tensor | None = None,
    points_a: torch.Tensor | None = None,
    depth_tol: float = 0.05,
    query_stride: int = 1,
) -> Correspondences:
    """GT correspondences A -> B that are in B's view and not occluded (step 1 of the module docstring)."""
    H, W = depth_a.shape
    if depth_b.shape != (H, W):
        raise ValueError(f"correspondence: depth_b {tuple(depth_b.shape)} differs from depth_a {(H, W)}")
    va = (depth_a > 0) if valid_a is None else (valid_a.bool() & (depth_a > 0))
    vb = (depth_b > 0) if valid_b is None else (valid_b.bool() & (depth_b > 0))
    grid = torch.zeros_like(va)
    grid[::query_stride, ::query_stride] = True
    va = va & grid
    world = (
        depth_to_world_points(depth_a.double(), intrinsics_a.double(), extrinsics_a.double())
        if points_a is None
        else points_a.double()
    )
    cam_b = world_to_cam(world, extrinsics_b.double())
    uv = project(cam_b, intrinsics_b.double())
    z = cam_b[..., 2]
    inside = (z > 0) & (uv[..., 0] >= -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < H - 0.5)
    keep = va & inside & torch.isfinite(uv).all(-1)
    ui = uv[..., 0].round().clamp(0, W - 1).long()
    vi = uv[..., 1].round().clamp(0, H - 1).long()
    d_b = depth_b.double()[vi, ui]
    keep = keep & vb[vi, ui] & ((z - d_b).abs() <= depth_tol * d_b)
    rows, cols = keep.nonzero(as_tuple=True)
    uv_a = torch.stack([cols, rows], dim=-1).double()
    return Correspondences(uv_a=uv_a, uv_b=uv[rows, cols], num_candidates=int(va.sum()))


@torch.no_grad()
def match_features(
    query: torch.Tensor,
    features_b: torch.Tensor,
    image_hw: tuple[int, int],
    candidate_stride: int = 1,
    chunk: int = 8192,
) -> torch.Tensor:
    """For each query feature ``[N, C]``, the pixel ``(u, v)`` of B with the most cosine-similar feature.

    Candidates are B's pixels on a ``candidate_stride`` grid, their features
    sampled at the pixel (see :func:`sample_features`) ``chunk`` at a time,
    so memory stays ``O(N * chunk)``. Ties go to the first candidate in
    row-major order. Returns ``[N, 2]`` float pixel positions.
    """
    H, W = image_hw
    q = F.normalize(query.float(), dim=-1)
    vs, us = torch.meshgrid(
        torch.arange(0, H, candidate_stride), torch.arange(0, W, candidate_stride), indexing="ij"
    )
    cand = torch.stack([us.reshape(-1), vs.reshape(-1)], dim=-1).to(features_b.device).double()
    best = torch.full((q.shape[0],), -float("inf"), device=q.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for s in range(0, cand.shape[0], chunk):
        fb = F.normalize(sample_features(features_b, cand[s : s + chunk], image_hw), dim=-1)
        sim = q @ fb.T
        val, idx = sim.max(dim=1)
        better = val > best
        best = torch.where(better, val, best)
        best_idx = torch.where(better, idx + s, best_idx)
    return cand[best_idx]


def correspondence_errors(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    depth_a: torch.Tensor,
    depth_b: torch.Tensor,
    intrinsics_a: torch.Tensor,
    intrinsics_b: torch.Tensor,
    extrinsics_a: torch.Tensor,
    extrinsics_b: torch.Tensor,
    valid_a: torch.Tensor | None = None,
    valid_b: torch.Tensor | None = None,
    points_a: torch.Tensor | None = None,
    depth_tol: float = 0.05,
    max_queries: int | None = 1000,
    seed: int = 0,
    query_stride: int = 1,
    candidate_stride: int = 1,
) -> tuple[torch.Tensor, int]:
    """Pixel errors ``[N]`` of the feature nearest neighbours for A -> B, and the number of visible points.

    At most ``max_queries`` visible points are scored (a seeded random subset).
    """
    image_hw = tuple(depth_a.shape)
    corr = visible_correspondences(
        depth_a, depth_b, intrinsics_a, intrinsics_b, extrinsics_a, extrinsics_b,
        valid_a, valid_b, points_a, depth_tol, query_stride,
    )  # fmt: skip
    n_visible = corr.uv_a.shape[0]
    uv_a, uv_b = corr.uv_a, corr.uv_b
    if max_queries is not None and n_visible > max_queries:
        sel = torch.randperm(n_visible, generator=torch.Generator().manual_seed(seed))[:max_queries]
        uv_a, uv_b = uv_a[sel], uv_b[sel]
    if uv_a.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64), n_visible
    dev = features_a.device
    qf = sample_features(features_a, uv_a.to(dev), image_hw)
    pred = match_features(qf, features_b, image_hw, candidate_stride).to(uv_b.device)
    return (pred - uv_b).norm(dim=-1), n_visible


def summarize_correspondence(
    errors: torch.Tensor,
    image_hw: tuple[int, int],
    thresholds_px: Sequence[float] = PX_THRESHOLDS,
    thresholds_frac: Sequence[float] = FRAC_THRESHOLDS,
) -> dict[str, float]:
    """Mean/median pixel error and PCK at pixel and diagonal-fraction thresholds (module docstring)."""
    e = errors.double().reshape(-1)
    n = e.numel()
    nan = float("nan")
    out = {
        "corr_err_px": float(e.mean()) if n else nan,
        "corr_err_median_px": float(e.median()) if n else nan,
    }
    for t in thresholds_px:
        out[f"pck_{t:g}px"] = float((e <= t).double().mean()) if n else nan
    diag = math.hypot(*image_hw)
    for f in thresholds_frac:
        out[f"pck_{f:g}diag"] = float((e <= f * diag).double().mean()) if n else nan
    out["num_queries"] = float(n)
    return out


def correspondence_metrics(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    depth_a: torch.Tensor,
    depth_b: torch.Tensor,
    intrinsics_a: torch.Tensor,
    intrinsics_b: torch.Tensor,
    extrinsics_a: torch.Tensor,
    extrinsics_b: torch.Tensor,
    valid_a: torch.Tensor | None = None,
    valid_b: torch.Tensor | None = None,
    points_a: torch.Tensor | None = None,
    depth_tol: float = 0.05,
    max_queries: int | None = 1000,
    seed: int = 0,
    query_stride: int = 1,
    candidate_stride: int = 1,
    thresholds_px: Sequence[float] = PX_THRESHOLDS,
    thresholds_frac: Sequence[float] = FRAC_THRESHOLDS,
) -> dict[str, float]:
    """Correspondence scores for one ordered pair of views A -> B (see the module docstring).

    ``features_*`` ``[h,w,C]``; ``depth_*``/``valid_*`` ``[H,W]``;
    ``intrinsics_*`` ``[3,3]`` (pixels); ``extrinsics_*`` ``[3,4]``
    world->camera; optional ``points_a [H,W,3]`` GT world points of A.
    Returns ``corr_err_px``, ``corr_err_median_px``, ``pck_{t}px``,
    ``pck_{f}diag``, ``num_queries``, ``num_visible``.
    """
    err, n_visible = correspondence_errors(
        features_a, features_b, depth_a, depth_b, intrinsics_a, intrinsics_b, extrinsics_a, extrinsics_b,
        valid_a, valid_b, points_a, depth_tol, max_queries, seed, query_stride, candidate_stride,
    )  # fmt: skip
    out = summarize_correspondence(err, tuple(depth_a.shape), thresholds_px, thresholds_frac)
    out["num_visible"] = float(n_visible)
    return out


def clip_correspondence_metrics(
    features: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    valid: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    **kwargs,
) -> dict[str, float]:
    """Correspondence scores of a clip, pooled over ordered view pairs.

    ``features [S,h,w,C]`` (one map per frame), ``depth [S,H,W]``,
    ``intrinsics [S,3,3]``, ``extrinsics [S,3,4]``, optional ``valid``
    ``[S,H,W]`` and ``points [S,H,W,3]``. ``pairs`` defaults to every ordered
    pair ``(a, b)``, ``a != b``; the errors of all pairs are pooled before
    summarising. Other keyword arguments go to :func:`correspondence_errors`
    (``seed`` is offset by the pair index) or to the thresholds.
    """
    S = depth.shape[0]
    if features.shape[0] != S:
        raise ValueError(f"correspondence: features have {features.shape[0]} frames, depth has {S}")
    if pairs is None:
        pairs = [(a, b) for a in range(S) for b in range(S) if a != b]
    thr = {k: kwargs.pop(k) for k in ("thresholds_px", "thresholds_frac") if k in kwargs}
    seed = kwargs.pop("seed", 0)
    errs, visible = [], 0
    for k, (a, b) in enumerate(pairs):
        e, nv = correspondence_errors(
            features[a], features[b], depth[a], depth[b], intrinsics[a], intrinsics[b], extrinsics[a], extrinsics[b],
            None if valid is None else valid[a], None if valid is None else valid[b],
            None if points is None else points[a], seed=seed + k, **kwargs,
        )  # fmt: skip
        errs.append(e)
        visible += nv
    out = summarize_correspondence(torch.cat(errs) if errs else torch.zeros(0), tuple(depth.shape[-2:]), **thr)
    out["num_visible"] = float(visible)
    out["num_pairs"] = float(len(pairs))
    return out
