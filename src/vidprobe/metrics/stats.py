"""Uncertainty of reported numbers: bootstrap interval over clips, t-interval over seeds.

* :func:`bootstrap_ci` - percentile bootstrap of a statistic (the mean by
  default) over per-clip values: ``n_resamples`` resamples with replacement
  drawn by ``numpy.random.default_rng(seed)``; the interval is the
  ``(1-c)/2`` and ``(1+c)/2`` quantiles of the resampled statistic
  (``c = 0.95``). Same values and seed -> same interval. Non-finite values
  (clips a metric could not score) are dropped first and their number is
  reported; with ``keep_inf=True`` only NaN is dropped and ``+-inf`` (a
  failed clip's stated value, :mod:`vidprobe.metrics.modes`) is resampled
  like any value: a resample containing ``+inf`` has mean ``+inf``, and a
  bound is ``+inf`` when its quantile reaches such resamples.
* :func:`mean_ci_t` - mean over runs (e.g. seeds) with the Student-t
  interval ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` (``sd`` with ``n-1``).

* :func:`paired_bootstrap` - the difference ``mean(a) - mean(b)`` of two runs
  scored on the same clips, with a paired percentile bootstrap (each resample
  draws clip indices once and uses them for both runs) and the two-sided
  p-value that inverts that interval (below).
* :func:`holm` - Holm's step-down adjustment of a family of p-values.

With fewer than two values no interval exists: the bounds are NaN (the
results database stores them as NULL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

__all__ = ["CI", "Paired", "bootstrap_ci", "holm", "mean_ci_t", "paired_bootstrap"]


class CI(NamedTuple):
    estimate: float  # the statistic on the data itself
    low: float
    high: float
    n: int  # number of finite values used
    dropped: int = 0  # non-finite values left out


def _clean(values: Iterable[float], keep_inf: bool = False) -> tuple[np.ndarray, int]:
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(x) if keep_inf else np.isfinite(x)
    return x[keep], int((~keep).sum())


def _quantiles(stats: np.ndarray, qs: list[float]) -> list[float]:
    """``numpy.quantile`` (linear) that stays defined with infinities (numpy's lerp gives NaN there)."""
    if np.isfinite(stats).all():
        return [float(v) for v in np.quantile(stats, qs)]
    s = np.sort(stats)
    out = []
    for q in qs:
        pos = q * (s.size - 1)
        lo = int(np.floor(pos))
        frac = pos - lo
        a = s[lo]
        b = s[min(lo + 1, s.size - 1)]
        if frac == 0 or a == b:
            out.append(float(a))
        elif np.isinf(a) or np.isinf(b):
            out.append(float(a if np.isinf(a) else b))  # the interpolation reaches the infinite end
        else:
            out.append(float(a + (b - a) * frac))
    return out


def bootstrap_ci(
    values: Iterable[float],
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 1000,
    keep_inf: bool = False,
) -> CI:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) of ``values``.

    ``statistic`` must reduce along the last axis (``f(x[..., n]) -> [...]``),
    like ``lambda x: np.median(x, axis=-1)``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"bootstrap_ci: n_resamples must be >= 1, got {n_resamples}")
    stat = statistic or (lambda a: a.mean(axis=-1))
    x, dropped = _clean(values, keep_inf)
    n = x.size
    if n == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0, dropped)
    est = float(stat(x[None])[0])
    if n < 2:
        return CI(est, float("nan"), float("nan"), n, dropped)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=np.float64)
    for s in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - s)
        idx = rng.integers(0, n, size=(m, n))
        stats[s : s + m] = stat(x[idx])
    alpha = (1 - confidence) / 2
    low, high = _quantiles(stats, [alpha, 1 - alpha])
    return CI(est, low, high, n, dropped)


def mean_ci_t(values: Iterable[float], confidence: float = 0.95) -> CI:
    """Mean and Student-t interval across runs (seeds)."""
    from scipy.stats import t as student_t

    if not 0 < confidence < 1:
        raise ValueError(f"mean_ci_t: confidence must be in (0, 1), got {confidence}")
    x, dropped = _clean(values)
    n = x.size
    if n == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0, dropped)
    mean = float(x.mean())
    if n < 2:
        return CI(mean, float("nan"), float("nan"), n, dropped)
    half = float(student_t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return CI(mean, mean - half, mean + half, n, dropped)


class Paired(NamedTuple):
    """A paired comparison ``mean(a) - mean(b)`` over the clips both runs scored."""

    diff: float  # mean over the used clips of a - b
    low: float
    high: float
    p: float  # two-sided bootstrap p-value (see paired_bootstrap)
    n: int  # clips used (matched by id, finite in both runs)
    dropped: int = 0  # matched clips left out: a non-finite / missing value in either run


def _match(a, b) -> tuple[np.ndarray, np.ndarray, int]:
    """Arrays (positional) or ``{clip_id: value}`` mappings -> aligned float arrays and the matched-id count."""
    if isinstance(a, dict) != isinstance(b, dict):
        raise ValueError("paired_bootstrap: give both runs as {clip_id: value} mappings or both as arrays")
    if isinstance(a, dict):
        ka, kb = set(map(str, a)), set(map(str, b))
        if ka != kb:
            only_a, only_b = sorted(ka - kb), sorted(kb - ka)
            raise ValueError(
                f"paired_bootstrap: the runs were scored on different clips ({len(ka & kb)} shared, "
                f"{len(only_a)} only in a e.g. {only_a[:3]}, {len(only_b)} only in b e.g. {only_b[:3]}); "
                "a paired comparison needs the same clip ids")
        ids = sorted(ka)
        sa, sb = {str(k): v for k, v in a.items()}, {str(k): v for k, v in b.items()}
        conv = lambda v: np.nan if v is None else float(v)  # noqa: E731 - NULL in the results DB
        return (np.array([conv(sa[i]) for i in ids], dtype=np.float64),
                np.array([conv(sb[i]) for i in ids], dtype=np.float64), len(ids))
    xa = np.asarray(a, dtype=np.float64).reshape(-1)
    xb = np.asarray(b, dtype=np.float64).reshape(-1)
    if xa.size != xb.size:
        raise ValueError(f"paired_bootstrap: a has {xa.size} clips and b {xb.size}; a paired comparison needs the same clips")
    return xa, xb, xa.size


def paired_bootstrap(a, b, confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0,
                     chunk: int = 1000) -> Paired:
    """Paired percentile bootstrap of ``mean(a) - mean(b)`` over clips.

    ``a``, ``b``: per-clip values of two runs, either ``{clip_id: value}``
    mappings (matched by id; different id sets are refused with a
    ``ValueError`` naming how many were shared) or equal-length arrays ``[n]``
    already in the same clip order. Clips with a non-finite or missing value in
    either run are left out (``dropped``). Each resample draws ``n`` clip
    indices with replacement (``numpy.random.default_rng(seed).integers(0, n,
    (chunk, n))``, chunk after chunk) and takes the mean of ``d = a - b`` at those
    indices; the interval is the ``(1-c)/2`` / ``(1+c)/2`` quantiles (linear) of
    the resampled means. The p-value inverts that interval (the smallest
    ``1 - c`` whose interval reaches 0), with the usual ``+1`` so it is never 0:
    ``p = min(1, 2 * (1 + min(#(d* <= 0), #(d* >= 0))) / (1 + n_resamples))``
    (its floor is ``2 / (1 + n_resamples)``; ``p < 0.05`` goes with a 95%
    interval that excludes 0, up to that ``+1`` and the quantile interpolation). Two identical runs give
    ``diff = 0``, a zero-width interval and ``p = 1``. With fewer than two
    clips, bounds and p are NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap: confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"paired_bootstrap: n_resamples must be >= 1, got {n_resamples}")
    xa, xb, _ = _match(a, b)
    keep = np.isfinite(xa) & np.isfinite(xb)
    d = (xa - xb)[keep]
    n, dropped = int(d.size), int((~keep).sum())
    if n == 0:
        return Paired(float("nan"), float("nan"), float("nan"), float("nan"), 0, dropped)
    est = float(d.mean())
    if n < 2:
        return Paired(est, float("nan"), float("nan"), float("nan"), n, dropped)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=np.float64)
    for s in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - s)
        stats[s : s + m] = d[rng.integers(0, n, size=(m, n))].mean(axis=-1)
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(stats, [alpha, 1 - alpha]))
    tail = min(int((stats <= 0).sum()), int((stats >= 0).sum()))
    p = min(1.0, 2.0 * (1 + tail) / (1 + n_resamples))
    return Paired(est, low, high, float(p), n, dropped)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    With the ``m`` finite p-values sorted ascending ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``. NaN entries (no
    test) are not part of the family and stay NaN.
    """
    p = np.asarray(list(pvalues), dtype=np.float64).reshape(-1)
    out = np.full(p.size, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size == 0:
        return out.tolist()
    if ((p[idx] < 0) | (p[idx] > 1)).any():
        raise ValueError(f"holm: p-values must be in [0, 1], got {p[idx].tolist()}")
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    running = 0.0
    for j, k in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[k]))
        out[k] = running
    return out.tolist()
