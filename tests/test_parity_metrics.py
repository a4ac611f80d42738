"""vidprobe's ``compat="reference"`` metrics against the study's release, and where clean mode departs from it.

The fixture ``tests/fixtures/parity/metrics.safetensors`` holds seeded inputs and the values the release
(zxhuang1698/VidFM3D, its ``VideoProbeLitModule.validation_step`` with ``depth_loss``, ``build_mask`` /
``align_pmaps``, ``camera_loss`` / ``batched_se3_to_relative_pose_error`` / ``calculate_auc``) logs for them,
made by ``tools/parity/metrics.py`` (its metadata names the commit and the stubbed imports). Dense ground
truth has holes (NaN in the fixture, given to the release as point 0 / depth 0 / confidence 0, as vidprobe's
``prepare_targets`` does), large depth errors past the clamp, a NaN point, NaN / Inf depths; cameras have
near-zero and zero translations and NaN / Inf pose encodings. No upstream checkout is needed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from vidprobe.metrics import MetricAccumulator
from vidprobe.metrics.camera import CameraMetricAccumulator, relative_pose_errors
from vidprobe.metrics.depth import depth_error_reference
from vidprobe.metrics.modes import REFERENCE
from vidprobe.metrics.points import point_errors

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "metrics.safetensors"
CAMERA_KEYS = {"Auc_30": "auc_30", "Auc_10": "auc_10", "Auc_5": "auc_5", "Auc_3": "auc_3",
               "Rac_5": "rra_5", "Rac_15": "rra_15", "Tac_5": "rta_5", "Tac_15": "rta_15"}


@pytest.fixture(scope="module")
def fx():
    with safe_open(str(FIXTURE), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return t, meta


def check(ours, ref) -> None:
    """Agreement to 1e-5 relative (NaN where the release has NaN)."""
    ours = torch.as_tensor(ours, dtype=torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    scale = ref[torch.isfinite(ref)].abs().max() if torch.isfinite(ref).any() else torch.tensor(1.0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=float(1e-5 * scale), equal_nan=True)


def check_fails_when_perturbed(ours, ref) -> None:
    ref = torch.as_tensor(ref, dtype=torch.float64).clone().reshape(-1)
    i = int(torch.where(torch.isfinite(ref), ref.abs(), torch.zeros_like(ref)).argmax())
    ref[i] = ref[i] * (1 + 1e-3) if ref[i] != 0 else 1e-3
    with pytest.raises(AssertionError):
        check(torch.as_tensor(ours, dtype=torch.float64).reshape(-1), ref)


def _dense(t):
    return (t["dense_pred_points"].double(), t["dense_gt_points"].double(), t["dense_gt_conf"].double(),
            t["dense_valid"].bool(), t["dense_pred_depth"].double(), t["dense_gt_depth"].double())


def _batches(t):
    n = t["cam_gt_extrinsics"].shape[0]
    return [slice(0, 10), slice(10, n)]


def test_fixture_metadata(fx):
    t, meta = fx
    assert meta["upstream_repo"] == "zxhuang1698/VidFM3D" and len(meta["upstream_commit"]) == 40
    funcs = json.loads(meta["upstream_functions"])
    assert "vidfm3d.utils.loss.depth_loss" in funcs and "vidfm3d.utils.eval_utils.align_pmaps" in funcs
    assert "lightning" in json.loads(meta["substitutions"])
    assert FIXTURE.stat().st_size < 2_000_000
    assert all(v.dtype in (torch.float32, torch.uint8) for v in t.values())


def test_point_err_per_clip_matches_release(fx):
    t, _ = fx
    pp, gp, conf, valid, _, _ = _dense(t)
    ours = point_errors(pp, gp, conf, valid, compat="reference").point_err
    ref = t["ref_point_err"]
    assert math.isnan(ref[4]) and torch.isfinite(ref[[0, 1, 2, 3, 5]]).all()  # clip 4 has a NaN point
    check(ours, ref)
    check_fails_when_perturbed(ours, ref)


def test_point_err_without_enough_fit_pixels_is_not_aligned(fx):
    # 8 pixels: the top 25% is 2 pixels, fewer than the 3 the release's align_pmaps needs: no alignment
    t, _ = fx
    pe = point_errors(t["tiny_pred_points"].double(), t["tiny_gt_points"].double(), t["tiny_gt_conf"].double(),
                      compat="reference")
    assert pe.sim3.scale.item() == 1.0 and torch.equal(pe.sim3.rotation[0], torch.eye(3, dtype=torch.float64))
    check([pe.point_err.item()], t["ref_tiny_point_err"])
    check_fails_when_perturbed([pe.point_err.item()], t["ref_tiny_point_err"])


def test_depth_err_per_clip_matches_release(fx):
    t, _ = fx
    _, _, conf, valid, pd, gd = _dense(t)
    ours = depth_error_reference(pd, gd, conf, valid, compat="reference")
    ref = t["ref_depth_err"]
    check(ours, ref)
    check_fails_when_perturbed(ours, ref)


def test_dense_split_values_match_release_batch(fx):
    t, _ = fx
    pp, gp, conf, valid, pd, gd = _dense(t)
    acc = MetricAccumulator("reference")
    acc.update(pred_points=pp, gt_points=gp, gt_conf=conf, valid=valid, pred_depth=pd, gt_depth=gd)
    out = acc.compute()
    # the release pools the batch's pixels for Depth Err (equal clip sizes: = mean of clips) and averages
    # the clips' Point Err, which its NaN clip turns into NaN
    check([out["depth_err"]], t["ref_batch_depth_err"])
    check_fails_when_perturbed([out["depth_err"]], t["ref_batch_depth_err"])
    assert math.isnan(out["point_err"]) and math.isnan(float(t["ref_batch_point_err"][0]))
    assert out["failed_clips"] == 1 and out["failed_points"] == 1 and out["failed_depth"] == 1


def _release_failed(x: torch.Tensor) -> torch.Tensor:
    """The release marks a failed pair with NaN (rotation) or its 1e6-radian default (translation)."""
    return ~torch.isfinite(x) | (x > 1e3)


@pytest.mark.parametrize("which", ["rot", "trans"])
def test_pair_errors_match_release(fx, which):
    t, _ = fx
    r, tr = relative_pose_errors(t["cam_pred_extrinsics"], t["cam_gt_extrinsics"], "reference")
    ours = (r if which == "rot" else tr).reshape(-1)
    ref = t[f"ref_pair_{which}_f64"].double()
    failed = _release_failed(ref)
    assert failed.sum() >= 3  # the NaN / Inf pose encodings
    assert torch.equal(torch.isinf(ours), failed)  # the same pairs fail
    check(ours[~failed], ref[~failed])
    check_fails_when_perturbed(ours[~failed], ref[~failed])
    # the float32 values the release logs agree to float32 precision
    ref32 = t[f"ref_pair_{which}_f32"].double()
    assert torch.equal(_release_failed(ref32), failed)
    assert (ours[~failed] - ref32[~failed]).abs().max() < 0.05


def test_camera_metrics_per_batch_match_release(fx):
    t, _ = fx
    pred, gt = t["cam_pred_extrinsics"], t["cam_gt_extrinsics"]
    whole = CameraMetricAccumulator("reference")  # batches of 10, weighted by clips
    whole.update(pred, gt)
    sizes = []
    for b, sl in enumerate(_batches(t)):
        acc = CameraMetricAccumulator("reference")
        acc.update(pred[sl], gt[sl])
        m = acc.compute()
        sizes.append(sl.stop - sl.start)
        for ref_key, key in CAMERA_KEYS.items():
            check([m[key]], t[f"ref_{ref_key}"][b : b + 1])
            check_fails_when_perturbed([m[key]], t[f"ref_{ref_key}"][b : b + 1])
    w = whole.compute()
    for ref_key, key in CAMERA_KEYS.items():  # Lightning's on_epoch mean weighted by batch_size
        ref = t[f"ref_{ref_key}"].double()
        check([w[key]], [float((ref * torch.tensor(sizes, dtype=torch.float64)).sum() / sum(sizes))])
    assert w["failed_camera"] == 3


# ---- where clean mode (or one clean setting) departs from the release --------------------------------------


def test_clean_depth_err_divides_by_valid_pixels(fx):
    t, _ = fx
    _, _, conf, valid, pd, gd = _dense(t)
    clean = depth_error_reference(pd, gd, conf, valid)
    ref = t["ref_depth_err"].double()
    frac = valid.flatten(1).double().mean(1)  # N_valid / N_all
    for i in (1, 3):  # holes, no clamp, no NaN: clean = reference * N_all / N_valid
        assert frac[i] < 1 and clean[i].item() == pytest.approx(ref[i].item() / frac[i].item(), rel=1e-5)
    assert frac[0] == 1 and clean[0].item() == pytest.approx(ref[0].item(), rel=1e-5)
    assert clean[5] > ref[5] / frac[5] * (1 + 1e-3)  # no clamp in clean mode
    assert clean[4].item() == math.inf and math.isfinite(ref[4])  # a NaN/Inf depth fails the clip


def test_clean_point_err_fails_the_nan_clip(fx):
    t, _ = fx
    pp, gp, conf, valid, _, _ = _dense(t)
    clean = point_errors(pp, gp, conf, valid)
    assert clean.point_err[4].item() == math.inf and clean.failed.tolist() == [False] * 4 + [True, False]
    acc = MetricAccumulator()
    acc.update(pred_points=pp, gt_points=gp, gt_conf=conf, valid=valid)
    assert acc.compute()["point_err"] == math.inf


def test_one_setting_at_a_time_changes_exactly_its_pairs(fx):
    t, _ = fx
    pred, gt = t["cam_pred_extrinsics"], t["cam_gt_extrinsics"]
    r_ref, t_ref = relative_pose_errors(pred, gt, REFERENCE)
    # vidprobe's degenerate-translation rule: only pairs with a relative translation below 1e-9 change
    _, t_thr = relative_pose_errors(pred, gt, REFERENCE.with_(translation_direction="degenerate_threshold"))
    i, j = torch.combinations(torch.arange(4), 2).unbind(-1)

    def rel_t(e):  # translation of inv(P_i) P_j = R_i^T (t_j - t_i)
        e = e.double()
        return (e[:, i, :, :3].transpose(-1, -2) @ (e[:, j, :, 3:] - e[:, i, :, 3:]))[..., 0]

    tiny = (rel_t(torch.nan_to_num(pred)).norm(dim=-1) < 1e-9) | (rel_t(gt).norm(dim=-1) < 1e-9)
    ok = torch.isfinite(t_ref)
    changed = (t_thr - t_ref).abs() > 1e-3
    assert tiny[ok].any() and torch.equal(changed[ok], tiny[ok])
    # whole-clip failure for non-finite cameras: the clips with a NaN/Inf pose fail every pair
    r_fc, t_fc = relative_pose_errors(pred, gt, REFERENCE.with_(camera_nonfinite="fail_clip"))
    bad = ~torch.isfinite(pred).flatten(1).all(1)
    assert bad.tolist().count(True) == 3
    assert torch.isinf(r_fc[bad]).all() and torch.isfinite(r_ref[bad]).any()
    assert torch.equal(r_fc[~bad], r_ref[~bad])
