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

With fewer than two values no interval exists: the bounds are NaN (the
results database stores them as NULL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

__all__ = ["CI", "bootstrap_ci", "mean_ci_t"]


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
