"""The metric registry covers every metric the results DB records, and every table names Point Err's scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidprobe.metrics import MetricAccumulator
from vidprobe.metrics.correspondence import summarize_correspondence
from vidprobe.metrics.registry import BENCHMARK_METRICS, METRICS, spec


def _recorded_keys(compat: str) -> set[str]:
    """Every key an evaluation records (aggregate and per clip) on a small random batch, chamfer included."""
    g = torch.Generator().manual_seed(0)
    B, S, H, W = 2, 3, 4, 5
    gt = torch.randn(B, S, H, W, 3, generator=g)
    conf = torch.rand(B, S, H, W, generator=g) + 0.1
    valid = torch.ones(B, S, H, W, dtype=torch.bool)
    valid[1] = False  # a clip with nothing to score: skipped_<metric> appears
    depth = torch.rand(B, S, H, W, generator=g) + 0.5
    ext = torch.eye(4)[:3].expand(B, S, 3, 4).clone()
    ext[..., 3] = torch.randn(B, S, 3, generator=g)
    acc = MetricAccumulator(compat=compat, chamfer=True)
    acc.update(pred_points=gt + 0.1 * torch.randn(gt.shape, generator=g), gt_points=gt, gt_conf=conf, valid=valid,
               pred_depth=depth * 1.1, gt_depth=depth, pred_extrinsics=ext, gt_extrinsics=ext)
    keys = set(acc.compute()) | set(acc.intervals(n_resamples=10))
    for _, row in acc.per_clip():
        keys |= set(row)
    return keys


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_every_recorded_probe_metric_has_a_spec(compat):
    keys = _recorded_keys(compat)
    assert {"point_err", "depth_err", "auc_5", "num_clips", "failed_clips"} <= keys  # the probe ran
    missing = []
    for k in sorted(keys):
        try:
            spec(k)
        except KeyError:
            missing.append(k)
    assert not missing, f"metrics without a MetricSpec in vidprobe/metrics/registry.py: {missing}"


def test_every_consistency_metric_has_a_spec():
    per_video = summarize_correspondence(torch.rand(50) * 30, (24, 32)) | {"num_pairs": 12.0}
    # the pooled aggregate of vidprobe.pipeline.consistency adds these three counts
    keys = set(per_video) | {"num_queries", "num_pairs", "videos"}
    assert not [k for k in keys if k not in METRICS], sorted(keys - set(METRICS))


def test_unknown_metric_names_the_registry():
    with pytest.raises(KeyError, match="registry.py"):
        spec("no_such_metric")
    assert spec("skipped_point_err").lower_is_better is None


def test_a_scaled_metric_names_its_scale_in_every_header():
    for s in METRICS.values():
        if s.table_scale != 1.0:
            scaled, raw = s.column(scaled=True), s.column(scaled=False)
            assert f"x{s.table_scale:g}" in scaled and "(raw)" in raw and scaled != raw
            assert f"x{s.table_scale:g}" in s.key_column(scaled=True) and "(raw)" in s.key_column(scaled=False)
        else:
            assert s.column(True) == s.column(False) == s.label
    # the study's convention (Huang et al., Table 1): Point Err is shown x10, the other columns as they are
    assert METRICS["point_err"].table_scale == 10.0
    assert [METRICS[m].table_scale for m in BENCHMARK_METRICS[1:]] == [1.0, 1.0, 1.0]


def test_directions():
    errors = {"point_err", "point_err_unweighted", "depth_err", "abs_rel", "rmse", "corr_err_px"}
    accuracies = {"delta_1_25", "auc_3", "auc_30", "rra_5", "rta_15", "pck_5px"}
    assert all(METRICS[m].lower_is_better is True for m in errors)
    assert all(METRICS[m].lower_is_better is False for m in accuracies)
    assert all(METRICS[m].lower_is_better is None for m in ("num_clips", "failed_clips", "videos"))


def test_published_tuples_match_the_registry_columns():
    from vidprobe.report.published import PUBLISHED, PUBLISHED_METRICS

    assert PUBLISHED_METRICS == BENCHMARK_METRICS
    assert all(len(v) == len(PUBLISHED_METRICS) for per_ds in PUBLISHED.values() for v in per_ds.values())


def test_evaluate_table_names_raw_and_x10_point_err():
    from vidprobe.pipeline.evaluate import EvalResult, format_table

    r = EvalResult(metrics={"point_err": 0.0312, "depth_err": 0.25, "num_clips": 2.0}, ci={}, per_clip=[],
                   run_id=None, checkpoint="ck", which="last", out_dir=Path("."), step=3)
    rows = {line.split("  ")[0]: line for line in format_table([r]).splitlines()}
    assert rows["point_err (raw)"].split()[2] == "0.0312"
    assert rows["point_err x10 (table)"].split()[-1] == f"{0.0312 * 10:.4f}"
    assert "depth_err" in rows and "depth_err (raw)" not in rows  # an unscaled metric carries no scale


def test_demo_summary_uses_the_table_scale():
    from vidprobe.pipeline.demo import format_summary

    text = format_summary({"backbones": {"oracle": {"point_err": 0.0312, "depth_err": 0.25, "auc_5": None,
                                                    "auc_30": 0.5}}, "failed": {}})
    head, _, row = text.splitlines()
    assert head.split() == ["backbone", "Point", "Err", "x10", "Depth", "Err", "AUC@5", "AUC@30"]
    assert row.split() == ["oracle", f"{0.0312 * 10:.3f}", "0.250", "-", "0.500"]


def test_each_metric_is_declared_next_to_its_computation():
    """Adding a metric touches one file: the module whose function returns a key also declares its spec."""
    from vidprobe.metrics import camera, correspondence, depth, points

    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, 3, 4, 5, 3, generator=g)
    conf = torch.rand(2, 3, 4, 5, generator=g) + 0.1
    valid = torch.ones(2, 3, 4, 5, dtype=torch.bool)
    d = torch.rand(2, 3, 4, 5, generator=g) + 0.5
    pe = points.point_errors(gt + 0.1, gt, conf, valid)
    assert set(pe.as_dict()) == {s.name for s in points.METRIC_SPECS}
    assert set(points.chamfer_metrics(pe.aligned, gt, valid)) == {s.name for s in points.CHAMFER_SPECS}
    assert set(depth.depth_metrics(d * 1.1, d, valid, conf)) == {s.name for s in depth.METRIC_SPECS}
    acc = MetricAccumulator(compat="clean")
    ext = torch.eye(4)[:3].expand(2, 3, 3, 4).clone()
    acc.update(pred_extrinsics=ext, gt_extrinsics=ext)
    cam_keys = {k for k in acc.compute() if k.split("_")[0] in ("auc", "rra", "rta")}
    assert cam_keys == {s.name for s in camera.METRIC_SPECS}
    corr = {s.name for s in correspondence.METRIC_SPECS}
    assert {"corr_err_px", "corr_err_median_px"} <= corr and all(k in METRICS for k in corr)
    declared = [*points.METRIC_SPECS, *points.CHAMFER_SPECS, *depth.METRIC_SPECS, *camera.METRIC_SPECS,
                *correspondence.METRIC_SPECS]
    assert all(METRICS[s.name] is s for s in declared)  # the registry holds the modules' own specs
