"""One registry of every metric the results DB records: its display label, table scale and direction.

A :class:`MetricSpec` says how a metric is shown, never how it is computed (the computing modules own
that: :mod:`vidprobe.metrics.points`, :mod:`~vidprobe.metrics.depth`, :mod:`~vidprobe.metrics.camera`,
:mod:`~vidprobe.metrics.correspondence`, :class:`vidprobe.metrics.MetricAccumulator`). Every table and
figure (the report, the sweep table, the published numbers, ``vidprobe evaluate``'s table, the demo's
summary) reads its labels, scales and directions here.

Scales are always named: a metric with ``table_scale != 1`` (Point Err, shown x10 in the published
table) is headed ``"Point Err x10"`` when scaled and ``"Point Err (raw)"`` when not
(:meth:`MetricSpec.column`; :meth:`MetricSpec.key_column` does the same with the metric's name).

Adding a metric touches one file: the computing module returns it under a new key and declares its
:class:`~vidprobe.metrics.spec.MetricSpec` in that module's ``METRIC_SPECS`` (the accumulator records every key a
metric function returns); ``tests/test_metric_registry.py`` checks that every key the accumulators and the
consistency summary produce has a spec.
"""

from __future__ import annotations

from vidprobe.metrics import camera, correspondence, depth, points
from vidprobe.metrics.spec import COUNT, MetricSpec

__all__ = ["BENCHMARK_METRICS", "EVAL_TABLE_METRICS", "LOWER_IS_BETTER", "METRICS", "RADAR_METRICS", "MetricSpec",
           "spec"]


#: the counts the accumulators and the consistency summary record (the computed metrics' specs live with their code)
COUNT_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("num_clips", "clips", "counts", COUNT, fmt=".0f"),
    MetricSpec("num_pairs", "view pairs", "counts", COUNT, fmt=".0f"),
    MetricSpec("failed_clips", "failed clips", "counts", COUNT, fmt=".0f"),
    MetricSpec("failed_points", "failed clips (points)", "counts", COUNT, fmt=".0f"),
    MetricSpec("failed_depth", "failed clips (depth)", "counts", COUNT, fmt=".0f"),
    MetricSpec("failed_camera", "failed clips (cameras)", "counts", COUNT, fmt=".0f"),
    MetricSpec("failed", "failed", "counts", COUNT, fmt=".0f"),  # per clip: 1.0 for a failed clip
)
CONSISTENCY_COUNT_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("num_queries", "query pixels", "counts", COUNT, fmt=".0f"),
    MetricSpec("videos", "videos", "counts", COUNT, fmt=".0f"),
)


def _specs() -> list[MetricSpec]:
    """Table order: points, depth, camera, Chamfer, counts, consistency and its counts."""
    return [*points.METRIC_SPECS, *depth.METRIC_SPECS, *camera.METRIC_SPECS, *points.CHAMFER_SPECS, *COUNT_SPECS,
            *correspondence.METRIC_SPECS, *CONSISTENCY_COUNT_SPECS]


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
    raise KeyError(f"unknown metric {name!r}: declare its MetricSpec next to its code (METRIC_SPECS; vidprobe/metrics/registry.py gathers them) "
                   f"(known: {', '.join(METRICS)})")
