"""Point and depth metrics (hand-computed), the metric accumulator, and the interval statistics."""

import math

import numpy as np
import pytest
import roma
import torch

from vidprobe.geometry import Sim3, apply_sim3
from vidprobe.metrics import MetricAccumulator
from vidprobe.metrics.depth import depth_error_reference, depth_metrics, median_scale
from vidprobe.metrics.points import (
    TABLE_SCALE,
    align_sim3,
    chamfer_metrics,
    point_errors,
    quantile_linear,
    top_confidence_mask,
)
from vidprobe.metrics.stats import bootstrap_ci, mean_ci_t

D = torch.float64


def _scene(S=2, H=6, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(S, H, W, 3, generator=g, dtype=D)
    conf = 1 + torch.rand(S, H, W, generator=g, dtype=D) * 4
    return pts, conf, g


def _random_sim3(seed, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return Sim3(
        scale=torch.tensor(0.3 + 2 * torch.rand(1, generator=g).item(), dtype=dtype),
        rotation=roma.random_rotmat(dtype=dtype, generator=g),
        translation=torch.randn(3, generator=g, dtype=dtype),
    )


def _apply(sim, pts):
    flat = pts.reshape(-1, 3)
    return apply_sim3(sim, flat).reshape(pts.shape)


def test_quantile_matches_numpy():
    x = torch.rand(1001, dtype=D)
    for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        assert quantile_linear(x, q).item() == pytest.approx(np.percentile(x.numpy(), q * 100))
    assert quantile_linear(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.5).item() == 2.5


def test_top_confidence_mask_is_top_quarter_of_valid_pixels():
    conf = torch.arange(1, 17, dtype=D).reshape(1, 4, 4)
    m = top_confidence_mask(conf)
    # 75th percentile of 1..16 = 12.25 -> 13..16 kept
    assert m.sum() == 4 and m.reshape(-1)[-4:].all()
    valid = torch.ones_like(m)
    valid[0, 3, :] = False  # drop 13..16: among 1..12 the threshold is 9.25 -> 10, 11, 12
    m2 = top_confidence_mask(conf, valid)
    assert m2.reshape(-1).nonzero().squeeze(1).tolist() == [9, 10, 11]


def test_umeyama_removes_exact_sim3():
    gt, conf, _ = _scene()
    sim = _random_sim3(1)
    # pred = sim^-1(gt): aligning recovers gt exactly
    inv = Sim3(1 / sim.scale, sim.rotation.T, -(sim.rotation.T @ sim.translation) / sim.scale)
    pred = _apply(inv, gt)
    pe = point_errors(pred, gt, conf)
    assert pe.point_err.item() < 1e-9 and pe.point_err_unweighted.item() < 1e-9
    assert torch.allclose(pe.aligned, gt, atol=1e-9)
    assert pe.sim3.scale.item() == pytest.approx(sim.scale.item())


def test_point_error_invariant_to_global_sim3_of_prediction():
    gt, conf, g = _scene(seed=3)
    pred = gt + 0.1 * torch.randn(gt.shape, generator=g, dtype=D)
    base = point_errors(pred, gt, conf)
    for seed in range(3):
        moved = _apply(_random_sim3(10 + seed), pred)
        pe = point_errors(moved, gt, conf)
        assert pe.point_err.item() == pytest.approx(base.point_err.item(), rel=1e-7)
        assert pe.point_err_unweighted.item() == pytest.approx(base.point_err_unweighted.item(), rel=1e-7)
    assert base.point_err.item() > 0.01  # the noise is really there


def test_top_quarter_fit_ignores_low_confidence_outliers():
    gt, _, g = _scene(S=2, H=8, W=8, seed=5)
    conf = torch.ones(2, 8, 8, dtype=D)
    conf.view(-1)[torch.randperm(128, generator=g)[:40]] = 5.0  # 40 of 128 high-confidence pixels (> 25%)
    sim = _random_sim3(2)
    inv = Sim3(1 / sim.scale, sim.rotation.T, -(sim.rotation.T @ sim.translation) / sim.scale)
    pred = _apply(inv, gt)
    low = conf == 1.0
    offset = torch.tensor([30.0, -20.0, 10.0], dtype=D)
    pred[low] = pred[low] + offset  # big outliers, only where confidence is low
    pe = point_errors(pred, gt, conf)
    # the fit uses only conf == 5 pixels -> exact transform; outlier error = s * |offset| (rotation keeps norms)
    expected_e = sim.scale.item() * offset.norm().item()
    n_low = int(low.sum())
    assert pe.point_err.item() == pytest.approx(n_low * 1.0 * expected_e / conf.sum().item(), rel=1e-9)
    assert pe.point_err_unweighted.item() == pytest.approx(n_low * expected_e / 128, rel=1e-9)
    assert (pe.aligned[~low] - gt[~low]).norm(dim=-1).max() < 1e-9
    # fitting on every pixel instead is disturbed by the outliers
    spoiled = point_errors(pred, gt, conf, top_fraction=1.0)
    assert (spoiled.aligned[~low] - gt[~low]).norm(dim=-1).mean() > 0.1


def test_point_error_hand_computed_weighted_vs_unweighted():
    # 2x2 pixels, confidences 1,2,3,4: the 75th percentile is 3.25, one fit pixel (< 3) -> no alignment
    gt = torch.zeros(1, 2, 2, 3, dtype=D)
    pred = gt.clone()
    pred[0, 0, 0, 0] = 1.0  # e = 1 at conf 1
    pred[0, 1, 1, 1] = 2.0  # e = 2 at conf 4
    conf = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=D)
    pe = point_errors(pred, gt, conf)
    assert pe.point_err.item() == pytest.approx((1 * 1 + 4 * 2) / 10)  # sum(c e) / sum(c) = 0.9
    assert pe.point_err_unweighted.item() == pytest.approx(3 / 4)
    assert TABLE_SCALE * pe.point_err.item() == pytest.approx(9.0)
    valid = torch.tensor([[[True, True], [True, False]]])
    pv = point_errors(pred, gt, conf, valid)
    assert pv.point_err.item() == pytest.approx(1 / 6) and pv.point_err_unweighted.item() == pytest.approx(1 / 3)


def test_point_error_batched_matches_single_and_nan_on_empty():
    gt, conf, g = _scene(seed=7)
    pred = gt + 0.05 * torch.randn(gt.shape, generator=g, dtype=D)
    gt2, conf2, _ = _scene(seed=8)
    pred2 = gt2 * 1.5
    batch = point_errors(torch.stack([pred, pred2]), torch.stack([gt, gt2]), torch.stack([conf, conf2]))
    assert batch.point_err.shape == (2,)
    assert batch.point_err[0].item() == pytest.approx(point_errors(pred, gt, conf).point_err.item(), rel=1e-9)
    assert batch.point_err[1].item() < 1e-9  # a pure scale is removed
    empty = point_errors(pred, gt, conf, torch.zeros(conf.shape, dtype=torch.bool))
    assert math.isnan(empty.point_err.item()) and math.isnan(empty.point_err_unweighted.item())
    with pytest.raises(ValueError, match="gt_conf"):
        point_errors(pred, gt, conf[0])
    with pytest.raises(ValueError, match="pred_points"):
        point_errors(pred[..., :2], gt, conf)


def test_weighted_umeyama_equals_subset_fit():
    gt, conf, g = _scene(seed=9)
    pred = gt + 0.2 * torch.randn(gt.shape, generator=g, dtype=D)
    mask = conf > 3
    aligned, sim = align_sim3(pred, gt, mask)
    R, t, s = roma.rigid_points_registration(pred[mask], gt[mask], compute_scaling=True)
    assert torch.allclose(sim.rotation, R, atol=1e-9) and sim.scale.item() == pytest.approx(s.item())


def test_chamfer_hand_computed():
    x = torch.arange(10, dtype=D)
    gt = torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], -1).reshape(1, 1, 10, 3)
    pred = gt.clone()
    pred[..., 2] += 0.5  # every nearest neighbour is the same index at distance 0.5
    m = chamfer_metrics(pred, gt)
    assert m["acc"].item() == pytest.approx(0.5) and m["comp"].item() == pytest.approx(0.5)
    assert m["chamfer"].item() == pytest.approx(0.5)
    assert chamfer_metrics(gt, gt)["chamfer"].item() == 0.0
    # subsampling is seeded
    big_gt, _, g = _scene(S=1, H=20, W=20)
    big_pred = big_gt + 0.1 * torch.randn(big_gt.shape, generator=g, dtype=D)
    a = chamfer_metrics(big_pred, big_gt, max_points=50, seed=1)["chamfer"]
    b = chamfer_metrics(big_pred, big_gt, max_points=50, seed=1)["chamfer"]
    assert a.item() == b.item()


def test_depth_error_reference_hand_computed_2x2():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    gt = torch.ones(1, 2, 2)
    conf = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # |e| = 0,1,2,3; sum(c|e|) = 0 + 2 + 6 + 12 = 20; divided by the pixel count 4 (not sum(c) = 10)
    assert depth_error_reference(pred, gt, conf).item() == pytest.approx(5.0)
    valid = torch.tensor([[[True, True], [True, False]]])
    assert depth_error_reference(pred, gt, conf, valid).item() == pytest.approx(8 / 3)
    assert depth_metrics(pred, gt, None, conf)["depth_err"].item() == pytest.approx(5.0)


def test_depth_standard_metrics_hand_computed_and_scale_invariant():
    gt = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=D)
    pred = torch.tensor([[[1.0, 2.0], [3.0, 8.0]]], dtype=D) * 3.0
    # medians: gt 2.5, pred 7.5 -> s = 1/3 -> d = 1, 2, 3, 8
    assert median_scale(pred, gt).item() == pytest.approx(1 / 3)
    m = depth_metrics(pred, gt)
    assert m["abs_rel"].item() == pytest.approx(0.25)  # (0 + 0 + 0 + 4/4) / 4
    assert m["rmse"].item() == pytest.approx(2.0)  # sqrt(16 / 4)
    assert m["delta_1_25"].item() == pytest.approx(0.75)  # 8/4 = 2 fails
    assert "depth_err" not in m
    g = torch.Generator().manual_seed(0)
    gt_r = 1 + torch.rand(2, 3, 5, 7, generator=g, dtype=D)
    pred_r = gt_r * (1 + 0.2 * torch.randn(gt_r.shape, generator=g, dtype=D)).abs()
    a = depth_metrics(pred_r, gt_r)
    b = depth_metrics(pred_r * 17.3, gt_r)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-10)
    assert a["abs_rel"].shape == (2,) and (a["abs_rel"] > 0).all()


def test_depth_masks_and_empty_clip():
    gt = torch.tensor([[[1.0, 0.0], [2.0, 4.0]]], dtype=D)  # 0 = unknown depth
    pred = torch.tensor([[[1.0, 9.0], [2.0, 4.0]]], dtype=D)
    m = depth_metrics(pred, gt)
    assert m["abs_rel"].item() == pytest.approx(0.0) and m["delta_1_25"].item() == 1.0
    empty = depth_metrics(pred, gt, torch.zeros(gt.shape, dtype=torch.bool), torch.ones_like(gt))
    assert all(math.isnan(v.item()) for v in empty.values())
    with pytest.raises(ValueError, match="differ"):
        depth_metrics(pred, gt[..., :1])


def test_metric_accumulator_end_to_end():
    g = torch.Generator().manual_seed(0)
    B, S, H, W = 3, 4, 6, 8
    gt_pts = torch.randn(B, S, H, W, 3, generator=g)
    conf = 1 + torch.rand(B, S, H, W, generator=g)
    gt_depth = 1 + torch.rand(B, S, H, W, generator=g)
    R = roma.random_rotmat(B * S, generator=g).reshape(B, S, 3, 3)
    ext = torch.cat([R, torch.randn(B, S, 3, 1, generator=g)], -1)
    acc = MetricAccumulator(chamfer=True)
    acc.update(gt_pts * 2.0, gt_pts, conf, None, gt_depth * 1.5, gt_depth, ext.clone(), ext, ["a", "b", "c"])
    acc.update(gt_pts[:1] + 1.0, gt_pts[:1], conf[:1], None, gt_depth[:1], gt_depth[:1], ext[:1], ext[:1])
    out = acc.compute()
    assert out["num_clips"] == 4 and out["auc_30"] == pytest.approx(1.0)
    assert out["point_err"] < 1e-5 and out["abs_rel"] < 1e-6 and out["chamfer"] < 1e-5
    # depth_err: 3 clips with error 0.5 d c, one with 0
    ref = (0.5 * gt_depth * conf).flatten(1).mean(1).sum().item() / 4
    assert out["depth_err"] == pytest.approx(ref, rel=1e-5)
    ids = [c for c, _ in acc.per_clip()]
    assert ids == ["a", "b", "c", "3"]
    ci = acc.intervals(n_resamples=200)
    assert ci["depth_err"].low <= out["depth_err"] <= ci["depth_err"].high
    with pytest.raises(ValueError, match="gt_conf"):
        acc.update(pred_points=gt_pts, gt_points=gt_pts)


def test_bootstrap_ci_covers_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, size=200)
    a = bootstrap_ci(x, seed=1, n_resamples=4000)
    b = bootstrap_ci(x, seed=1, n_resamples=4000)
    c = bootstrap_ci(x, seed=2, n_resamples=4000)
    assert a == b and a != c
    assert a.low < x.mean() < a.high and a.estimate == pytest.approx(x.mean())
    # width close to the normal-theory 2 * 1.96 * sd / sqrt(n)
    width = 2 * 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert a.high - a.low == pytest.approx(width, rel=0.15)
    d = bootstrap_ci([1.0, float("nan"), 3.0, float("inf")])
    assert d.n == 2 and d.dropped == 2 and d.estimate == 2.0
    one = bootstrap_ci([5.0])
    assert one.estimate == 5.0 and math.isnan(one.low) and math.isnan(one.high)
    med = bootstrap_ci(x, statistic=lambda v: np.median(v, axis=-1), n_resamples=500)
    assert med.estimate == pytest.approx(np.median(x))


def test_t_interval_over_seeds_hand_computed():
    ci = mean_ci_t([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert ci.estimate == 2.0
    assert ci.low == pytest.approx(2 - half) and ci.high == pytest.approx(2 + half)
    assert math.isnan(mean_ci_t([1.0]).low)


# ---- reference mode, named settings and failed clips ---------------------------------------------------------


def test_metric_settings_name_every_difference():
    from dataclasses import fields

    from vidprobe.metrics.modes import CLEAN, REFERENCE, MetricSettings, resolve_settings, settings_table

    names = [f.name for f in fields(MetricSettings) if f.name != "mode"]
    table = settings_table()
    assert [r["setting"] for r in table] == [f"metrics.{n}" for n in names] and all(r["doc"] for r in table)
    assert all(getattr(CLEAN, n) != getattr(REFERENCE, n) for n in names)  # each one is a real difference
    assert resolve_settings("reference") is REFERENCE and resolve_settings(CLEAN) is CLEAN
    custom = CLEAN.with_(depth_term_clamp=100.0)
    assert custom.mode == "custom" and custom.depth_term_clamp == 100.0 and CLEAN.depth_term_clamp is None
    with pytest.raises(ValueError, match="compat"):
        resolve_settings("vggt")
    with pytest.raises(ValueError, match="pixel_set"):
        CLEAN.with_(pixel_set="some")


def test_depth_err_reference_every_pixel_and_release_clamps():
    # pixel (0,1,1) is a hole: vidprobe hands it over with depth 0 and confidence 0
    pred = torch.tensor([[[1.0, 2.0], [3.0, 400.0]]], dtype=D)
    gt = torch.ones(1, 2, 2, dtype=D)
    conf = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=D)
    valid = torch.tensor([[[True, True], [True, False]]])
    # valid terms |e| c: 0, 2, 6 -> 8. Clean divides by the 3 valid pixels, reference by all 4 (the hole adds 0)
    assert depth_error_reference(pred, gt, conf, valid).item() == pytest.approx(8 / 3)
    assert depth_error_reference(pred, gt, conf, valid, compat="reference").item() == pytest.approx(8 / 4)
    # the release's two clamps: e = min(|d - g|, 100), then min(e c, 100); NaN and Inf terms -> 0
    pred2 = torch.tensor([[[151.0, 61.0], [float("nan"), float("inf")]]], dtype=D)  # |e| = 150, 60, nan, inf
    conf2 = torch.tensor([[[0.5, 2.0], [3.0, 4.0]]], dtype=D)
    # (0,0): min(150,100) * 0.5 = 50 (one clamp on the product alone would give 75); (0,1): min(60*2, 100) = 100
    ref = depth_error_reference(pred2, gt, conf2, compat="reference").item()
    assert ref == pytest.approx((50 + 100 + 0 + 0) / 4)
    # clean: a NaN/Inf anywhere in the predicted depth fails the clip
    assert depth_error_reference(pred2, gt, conf2).item() == math.inf


def test_point_err_reference_threshold_over_all_pixels_and_eps():
    # 12 pixels, 6 valid with confidences 1..6, 6 holes (confidence 0 for the metric)
    g = torch.Generator().manual_seed(4)
    gt = torch.randn(1, 1, 12, 3, generator=g, dtype=D)
    conf = torch.tensor([1.0, 2, 3, 4, 5, 6, 9, 9, 9, 9, 9, 9], dtype=D).reshape(1, 1, 12)
    valid = torch.tensor([True] * 6 + [False] * 6).reshape(1, 1, 12)
    sim = _random_sim3(3)
    inv = Sim3(1 / sim.scale, sim.rotation.T, -(sim.rotation.T @ sim.translation) / sim.scale)
    pred = _apply(inv, gt)
    # clean: 75th percentile of the valid 1..6 = 4.75 -> fit {5, 6}: 2 pixels < 3 -> identity
    clean = point_errors(pred, gt, conf, valid)
    e = (pred - gt).norm(dim=-1)[0, 0, :6]
    c = conf[0, 0, :6]
    assert clean.point_err.item() == pytest.approx(float((c * e).sum() / c.sum()), rel=1e-12)
    # reference: over all 12 (holes at 0): sorted 0 x6, 1..6 -> position 8.25 -> 3.25 -> fit {4, 5, 6}: exact fit
    ref = point_errors(pred, gt, conf, valid, compat="reference")
    assert ref.point_err.item() < 1e-9 and (ref.aligned[0, 0, :6] - gt[0, 0, :6]).norm(dim=-1).max() < 1e-9
    # the weighted mean's denominator is sum(c) + 1e-6 in reference mode (no alignment: 2x2, one fit pixel)
    gt2 = torch.zeros(1, 2, 2, 3, dtype=D)
    pred2 = gt2.clone()
    pred2[0, 0, 0, 0] = 1.0
    pred2[0, 1, 1, 1] = 2.0
    conf2 = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=D)
    assert point_errors(pred2, gt2, conf2, compat="reference").point_err.item() == pytest.approx(9 / (10 + 1e-6), rel=1e-12)
    assert point_errors(pred2, gt2, conf2).point_err.item() == pytest.approx(9 / 10, rel=1e-12)


def test_reference_fit_threshold_rounds_to_float32():
    from vidprobe.metrics.points import top_confidence_mask_reference

    a = 1.0
    b = float(np.nextafter(np.float32(1.0), np.float32(2.0)))  # the next float32 after 1
    conf = torch.tensor([0.5, 0.6, a, b], dtype=D).reshape(1, 1, 4)
    # 75th percentile: position 2.25 -> a + 0.25 (b - a): above a in float64, rounds to a in float32
    assert top_confidence_mask(conf).reshape(-1).tolist() == [False, False, False, True]
    assert top_confidence_mask_reference(conf).reshape(-1).tolist() == [False, False, True, True]


def test_failed_clips_points_and_depth():
    gt, conf, g = _scene(S=2, H=4, W=5, seed=11)
    pred = gt + 0.1 * torch.randn(gt.shape, generator=g, dtype=D)
    valid = torch.ones(conf.shape, dtype=torch.bool)
    valid[0, 0, 0] = False
    bad = pred.clone()
    bad[0, 0, 0, 1] = float("nan")  # one NaN at an *invalid* pixel still fails the clip
    pe = point_errors(torch.stack([pred, bad]), torch.stack([gt, gt]), torch.stack([conf, conf]),
                      torch.stack([valid, valid]))
    assert pe.failed.tolist() == [False, True]
    assert math.isfinite(pe.point_err[0].item()) and pe.point_err[1].item() == math.inf
    assert pe.point_err_unweighted[1].item() == math.inf
    ref = point_errors(bad, gt, conf, valid, compat="reference")
    assert math.isnan(ref.point_err.item()) and ref.point_err_unweighted.item() == math.inf  # the release: NaN
    assert chamfer_metrics(bad, gt, valid)["chamfer"].item() == math.inf
    depth = 1 + gt[..., 2].abs()
    pd = depth * 1.1
    pd_bad = pd.clone()
    pd_bad[1, 2, 3] = float("inf")
    m = depth_metrics(torch.stack([pd, pd_bad]), torch.stack([depth, depth]), None, torch.stack([conf, conf]))
    assert m["delta_1_25"].tolist() == [1.0, 0.0]
    assert m["abs_rel"][1].item() == math.inf and m["rmse"][1].item() == math.inf
    assert m["depth_err"][1].item() == math.inf
    # reference keeps the release's Depth Err: the Inf term counts 0
    mr = depth_metrics(pd_bad, depth, None, conf, compat="reference")
    e = ((pd - depth).abs() * conf)
    e[1, 2, 3] = 0.0
    assert mr["depth_err"].item() == pytest.approx(e.mean().item(), rel=1e-12)


def test_metric_accumulator_failed_clip_is_counted_and_never_flatters():
    g = torch.Generator().manual_seed(2)
    B, S, H, W = 3, 4, 5, 6
    gt_pts = torch.randn(B, S, H, W, 3, generator=g)
    conf = 1 + torch.rand(B, S, H, W, generator=g)
    gt_depth = 1 + torch.rand(B, S, H, W, generator=g)
    R = roma.random_rotmat(B * S, generator=g).reshape(B, S, 3, 3)
    ext = torch.cat([R, torch.randn(B, S, 3, 1, generator=g)], -1)
    pred_pts = gt_pts + 0.05 * torch.randn(gt_pts.shape, generator=g)
    pred_depth = gt_depth * 1.05
    pred_ext = ext.clone()
    # clip 2 diverged: NaN everywhere
    pred_pts[2] = float("nan")
    pred_depth[2] = float("nan")
    pred_ext[2] = float("nan")
    args = (pred_pts, gt_pts, conf, None, pred_depth, gt_depth, pred_ext, ext, ["a", "b", "c"])
    clean = MetricAccumulator()
    clean.update(*args)
    out = clean.compute()
    assert out["failed_clips"] == 1 and out["failed_points"] == 1 and out["failed_depth"] == 1
    assert out["failed_camera"] == 1 and out["num_clips"] == 3
    assert out["point_err"] == math.inf and out["depth_err"] == math.inf and out["abs_rel"] == math.inf
    assert out["delta_1_25"] == pytest.approx(2 / 3)  # 1, 1, 0
    assert out["auc_30"] == pytest.approx(2 / 3) and out["rra_5"] == pytest.approx(2 / 3)
    assert not any(k.startswith("skipped_") for k in out)
    assert clean.failed_clips() == {"c": ["camera", "depth", "points"]}
    assert [m["failed"] for _, m in clean.per_clip()] == [0.0, 0.0, 1.0]
    ci = clean.intervals(n_resamples=200)
    assert ci["point_err"].high == math.inf and ci["point_err"].dropped == 0
    # the two good clips alone score better: the failure is not hidden
    good = MetricAccumulator()
    good.update(*(x[:2] if isinstance(x, torch.Tensor) else x for x in args[:-1]))
    assert good.compute()["delta_1_25"] > out["delta_1_25"]
    # reference: the release's numbers (Point Err NaN, Depth Err with the NaN terms at 0), still counted
    ref = MetricAccumulator("reference")
    ref.update(*args)
    r = ref.compute()
    assert math.isnan(r["point_err"]) and r["failed_clips"] == 1
    assert math.isfinite(r["depth_err"]) and r["depth_err"] < out["depth_err"]
    assert math.isnan(ref.intervals(n_resamples=50)["point_err"].low)


def test_bootstrap_keep_inf():
    ci = bootstrap_ci([1.0, 2.0, 3.0, math.inf, math.nan], n_resamples=500, keep_inf=True)
    assert ci.estimate == math.inf and ci.high == math.inf and ci.n == 4 and ci.dropped == 1
    assert 1.0 <= ci.low < 3.0  # resamples without the failed clip exist
