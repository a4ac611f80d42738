"""One registry of every metric the results DB records: its display label, table scale and direction.

A :class:`MetricSpec` says how a metric is shown, never how it is computed (the computing modules own
that: :mod:`vidprobe.metrics.points`, :mod:`~vidprobe.metrics.depth`, :mod:`~vidprobe.metrics.camera`,
:mod:`~vidprobe.metrics.correspondence`, :class:`vidprobe.metrics.MetricAccumulator`). Every table and
figure (the report, the sweep table, the published numbers, ``vidprobe evaluate``'s table, the demo's
summary) reads its labels, scales and directions here.

Scales are always named: a metric with ``table_scale != 1`` (Point Err, shown x10 in the published
table) is headed ``"Point Err x10"`` when scaled and ``"Point Err (raw)"`` when not
(:meth:`MetricSpec.column`; :meth:`MetricSpec.key_column` does the same with the metric's name).

Adding a metric: compute it (its module, under a new key), then add one :class:`MetricSpec` line to
``_SPECS`` below, in the position its table row should take; ``tests/test_metric_registry.py``
checks that every key the accumulators and the consistency summary produce has a spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidprobe.metrics.camera import ACC_THRESHOLDS, AUC_THRESHOLDS
from vidprobe.metrics.correspondence import FRAC_THRESHOLDS, PX_THRESHOLDS

__all__ = ["BENCHMARK_METRICS", "EVAL_TABLE_METRICS", "LOWER_IS_BETTER", "METRICS", "RADAR_METRICS", "MetricSpec",
           "spec"]


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is shown.

    ``name``: its key in metrics.json and the results DB. ``label``: the display name at scale 1.
    ``table_scale``: the factor of the published table (10 for Point Err; 1 for the rest).
    ``lower_is_better``: ``True`` for errors, ``False`` for accuracies, ``None`` for counts.
    ``unit``: e.g. ``"px"`` (empty: unitless). ``fmt``: the format of a value in the report tables.
    ``family``: ``points``, ``depth``, ``camera``, ``chamfer``, ``counts`` or ``consistency``.
    ``radar``: one of the axes of the report's radar chart.
    """

    name: str
    label: str
    family: str
    lower_is_better: bool | None
    table_scale: float = 1.0
    unit: str = ""
    fmt: str = ".3f"
    radar: bool = False

    @property
    def scaled_in_tables(self) -> bool:
        return self.table_scale != 1.0

    def _suffix(self, scaled: bool) -> str:
        if not self.scaled_in_tables:
            return ""
        return f" x{self.table_scale:g}" if scaled else " (raw)"

    def column(self, scaled: bool = True) -> str:
        """Display header: ``"Point Err x10"`` (scaled) / ``"Point Err (raw)"``; ``"Depth Err"`` either way."""
        return self.label + self._suffix(scaled)

    def key_column(self, scaled: bool = False) -> str:
        """Header by name for plain-text tables: ``"point_err (raw)"`` / ``"point_err x10"``; ``"depth_err"``."""
        return self.name + self._suffix(scaled)

    def scale(self, value: float | None, scaled: bool = True) -> float | None:
        """``value`` at the table scale (``scaled``) or raw; ``None`` stays ``None``."""
        if value is None:
            return None
        return value * self.table_scale if scaled else value

    @property
    def direction(self) -> str:
        """``"lower is better"``, ``"higher is better"`` or ``""`` (a count)."""
        if self.lower_is_better is None:
            return ""
        return "lower is better" if self.lower_is_better else "higher is better"


def _specs() -> list[MetricSpec]:
    err, acc = True, False
    out = [
        MetricSpec("point_err", "Point Err", "points", err, table_scale=10.0, radar=True),
        MetricSpec("point_err_unweighted", "Point Err unweighted", "points", err),
        MetricSpec("depth_err", "Depth Err", "depth", err, radar=True),
        MetricSpec("abs_rel", "AbsRel", "depth", err, radar=True),
        MetricSpec("rmse", "RMSE", "depth", err),
        MetricSpec("delta_1_25", "delta<1.25", "depth", acc),
    ]
    out += [MetricSpec(f"auc_{k}", f"AUC@{k}", "camera", acc, radar=k in (5, 30)) for k in AUC_THRESHOLDS]
    out += [MetricSpec(f"rra_{k}", f"RRA@{k}", "camera", acc, radar=k == 15) for k in ACC_THRESHOLDS]
    out += [MetricSpec(f"rta_{k}", f"RTA@{k}", "camera", acc, radar=k == 15) for k in ACC_THRESHOLDS]
    out += [
        MetricSpec("acc", "Accuracy", "chamfer", err),  # MetricAccumulator(chamfer=True)
        MetricSpec("comp", "Completeness", "chamfer", err),
        MetricSpec("chamfer", "Chamfer", "chamfer", err),
        MetricSpec("num_clips", "clips", "counts", None, fmt=".0f"),
        MetricSpec("num_pairs", "view pairs", "counts", None, fmt=".0f"),
        MetricSpec("failed_clips", "failed clips", "counts", None, fmt=".0f"),
        MetricSpec("failed_points", "failed clips (points)", "counts", None, fmt=".0f"),
        MetricSpec("failed_depth", "failed clips (depth)", "counts", None, fmt=".0f"),
        MetricSpec("failed_camera", "failed clips (cameras)", "counts", None, fmt=".0f"),
        MetricSpec("failed", "failed", "counts", None, fmt=".0f"),  # per clip: 1.0 for a failed clip
        MetricSpec("corr_err_px", "feature correspondence error", "consistency", err, unit="px"),
        MetricSpec("corr_err_median_px", "median feature correspondence error", "consistency", err, unit="px"),
    ]
    out += [MetricSpec(f"pck_{t:g}px", f"PCK@{t:g}px", "consistency", acc) for t in PX_THRESHOLDS]
    out += [MetricSpec(f"pck_{f:g}diag", f"PCK@{f:g} diagonal", "consistency", acc) for f in FRAC_THRESHOLDS]
    out += [
        MetricSpec("num_queries", "query pixels", "counts", None, fmt=".0f"),
        MetricSpec("videos", "videos", "counts", None, fmt=".0f"),
    ]
    return out


#: every metric by name, in table order
METRICS: dict[str, MetricSpec] = {s.name: s for s in _specs()}

#: the published table's columns (Huang et al., CVPR 2026, Table 1), in its order
BENCHMARK_METRICS: tuple[str, ...] = ("point_err", "depth_err", "auc_5", "auc_30")
#: the rows of `vidprobe evaluate`'s table: the point, depth and camera metrics
EVAL_TABLE_METRICS: tuple[str, ...] = tuple(s.name for s in METRICS.values() if s.family in ("points", "depth", "camera"))
#: the axes of the report's radar chart
RADAR_METRICS: tuple[str, ...] = tuple(s.name for s in METRICS.values() if s.radar)
#: the metrics where a smaller value is better
LOWER_IS_BETTER: frozenset[str] = frozenset(s.name for s in METRICS.values() if s.lower_is_better)


def spec(name: str) -> MetricSpec:
    """The spec of ``name``; ``skipped_<metric>`` (clips that could not be scored) is derived from ``<metric>``."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("skipped_") and name[len("skipped_"):] in METRICS:
        base = METRICS[name[len("skipped_"):]]
        return MetricSpec(name, f"clips skipped for {base.label}", "counts", None, fmt=".0f")
    raise KeyError(f"unknown metric {name!r}: add a MetricSpec to vidprobe/metrics/registry.py "
                   f"(known: {', '.join(METRICS)})")
