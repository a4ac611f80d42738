"""Camera metrics: hand-computed pair errors, AUC definitions, gauge (in)variance, accumulators."""

import math

import numpy as np
import pytest
import roma
import torch

from vidprobe.geometry import compose_extrinsics, rebase_to_first
from vidprobe.metrics.camera import (
    CameraMetricAccumulator,
    auc_pooled,
    auc_reference,
    camera_metrics,
    pair_indices,
    reference_histogram,
    relative_pose_errors,
    translation_error_deg,
)

D = torch.float64


def _rz(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=D)


def _ext(R: torch.Tensor, t) -> torch.Tensor:
    return torch.cat([R, torch.as_tensor(t, dtype=D)[:, None]], dim=-1)


def _random_clip(S: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = roma.random_rotmat(S, dtype=D, generator=g)
    t = torch.randn(S, 3, 1, generator=g, dtype=D)
    return torch.cat([R, t], -1)


# ---- the hand-worked 3-frame example -------------------------------------------------------------------------
# GT (world->camera): P0 = [I|0], P1 = [I|(-1,0,0)], P2 = [I|(0,0,-1)].
# Pred:               P0 = [I|0], P1 = [I|(-1,-1,0)], P2 = [Rz(10)|(0,0,-1)].
# Clean pairs P_i P_j^-1 = [R_i R_j^T | t_i - R_i R_j^T t_j]:
#   (0,1): GT t (1,0,0),  pred t (1,1,0), R = I       -> rot 0,  trans 45
#   (0,2): GT t (0,0,1),  pred R = Rz(-10), t (0,0,1) -> rot 10, trans 0
#   (1,2): GT t (-1,0,1), pred R = Rz(-10), t (-1,-1,1) -> rot 10, trans acos(2/sqrt(6)) = 35.264
# Reference pairs inv(P_i) P_j = [R_i^T R_j | R_i^T (t_j - t_i)] give the same numbers here because
# P0 = I and R1 = I on both sides (anchored at frame 0).
GT3 = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(torch.eye(3, dtype=D), [-1, 0, 0]),
                   _ext(torch.eye(3, dtype=D), [0, 0, -1])])  # fmt: skip
PRED3 = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(torch.eye(3, dtype=D), [-1, -1, 0]),
                     _ext(_rz(10), [0, 0, -1])])  # fmt: skip
ANG_12 = math.degrees(math.acos(2 / math.sqrt(6)))


def test_pair_indices_order():
    i, j = pair_indices(4)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(ValueError):
        pair_indices(1)


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_hand_worked_three_frames(compat):
    r, t = relative_pose_errors(PRED3, GT3, compat)
    assert torch.allclose(r, torch.tensor([0.0, 10.0, 10.0], dtype=D), atol=1e-6)
    assert torch.allclose(t, torch.tensor([45.0, 0.0, ANG_12], dtype=D), atol=1e-6)


def test_rra_rta_on_hand_example():
    m = camera_metrics(PRED3, GT3)
    # rotation errors 0, 10, 10; translation errors 45, 0, 35.26
    assert m["rra_5"] == pytest.approx(1 / 3)
    assert m["rra_15"] == pytest.approx(1.0)
    assert m["rta_5"] == pytest.approx(1 / 3)
    assert m["rta_15"] == pytest.approx(1 / 3)
    # pair errors 45, 10, 35.26: nothing under 5 degrees
    assert m["auc_3"] == 0.0 and m["auc_5"] == 0.0


def test_world_change_clean_invariant_reference_not():
    # pred world frame moved: P_k -> P_k G with G = [I | (5,0,0)]
    G = _ext(torch.eye(3, dtype=D), [5, 0, 0])
    moved = compose_extrinsics(PRED3, G.expand(3, 3, 4))
    r_c, t_c = relative_pose_errors(moved, GT3, "clean")
    assert torch.allclose(t_c, torch.tensor([45.0, 0.0, ANG_12], dtype=D), atol=1e-6)
    assert torch.allclose(r_c, torch.tensor([0.0, 10.0, 10.0], dtype=D), atol=1e-6)
    r_r, t_r = relative_pose_errors(moved, GT3, "reference")
    # inv(P_i G) P_j G = G^-1 [A|b] G = [A | A g + b - g]; rotations unchanged here (G has no rotation).
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    v02 = np.array([5 * c - 5, 5 * s, -1.0])  # vs GT (0,0,-1)
    v12 = np.array([5 * c - 4, 5 * s + 1, -1.0])  # vs GT (1,0,-1)

    def folded(a, b):
        ang = math.degrees(math.acos(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)))
        return min(ang, 180 - ang)

    expected = [45.0, folded(v02, np.array([0, 0, -1.0])), folded(v12, np.array([1, 0, -1.0]))]
    assert torch.allclose(t_r, torch.tensor(expected, dtype=D), atol=1e-6)
    assert expected[1] > 40  # 10 degrees became ~41 degrees: not gauge invariant
    # anchoring the moved prediction at frame 0 again restores the reference numbers
    r_a, t_a = relative_pose_errors(rebase_to_first(moved)[0], GT3, "reference")
    assert torch.allclose(t_a, torch.tensor([45.0, 0.0, ANG_12], dtype=D), atol=1e-6)


def test_clean_invariant_to_random_rigid_and_similarity_world_change():
    gt = _random_clip(5, 1)
    pred = compose_extrinsics(gt, _random_clip(5, 2) * 0.05 + _ext(torch.eye(3, dtype=D), [0, 0, 0]))
    pred = torch.cat([roma.special_procrustes(pred[..., :3]), pred[..., 3:]], -1)
    r0, t0 = relative_pose_errors(pred, gt, "clean")
    G = _random_clip(1, 3)[0]
    moved = compose_extrinsics(pred, G.expand(5, 3, 4))
    r1, t1 = relative_pose_errors(moved, gt, "clean")
    assert torch.allclose(r0, r1, atol=1e-8) and torch.allclose(t0, t1, atol=1e-7)
    # a global scale of the predicted translations changes nothing either (directions only)
    scaled = pred.clone()
    scaled[..., 3] *= 3.7
    r2, t2 = relative_pose_errors(scaled, gt, "clean")
    assert torch.allclose(t0, t2, atol=1e-8)
    _, tr0 = relative_pose_errors(pred, gt, "reference")
    _, tr1 = relative_pose_errors(moved, gt, "reference")
    assert (tr0 - tr1).abs().max() > 1.0


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_zero_error_gives_auc_one(compat):
    gt = torch.stack([_random_clip(4, s) for s in range(3)])
    m = camera_metrics(gt.clone(), gt, compat)
    for k in (3, 5, 10, 15, 30):
        assert m[f"auc_{k}"] == pytest.approx(1.0)
    for k in (5, 15):
        assert m[f"rra_{k}"] == 1.0 and m[f"rta_{k}"] == 1.0


def test_uniform_15_degrees_auc30_is_half():
    e = np.full(60, 15.0)
    # clean: 1-degree bins [0,1),...,[29,30] pooled: 15 is in bin 15 -> cumulative 0 on bins 0..14, 1 on 15..29
    assert auc_pooled(e, 30) == pytest.approx(0.5)
    # reference: 31 bins of 30/31 degree: 15 * 31/30 = 15.5 -> bin 15 -> first 30 cumulative bins: 15 of 30 are 1
    assert auc_reference(e, 30) == pytest.approx(0.5)
    # numpy.histogram's last bin is closed: an error of exactly k counts in AUC@k's last bin
    assert auc_pooled(e, 15) == pytest.approx(1 / 15) and auc_pooled(e, 16) == pytest.approx(1 / 16)
    assert auc_pooled(e, 14) == 0.0


def test_uniform_15_degree_rotation_error_through_accumulator():
    # 2-frame clips: GT P1 = [I | (1,0,0)], pred P1 = [Rz(15.5) | Rz(15.5)(1,0,0)]: relative translation
    # directions agree exactly, rotation error 15.5 degrees (inside the [15, 16) bin, away from edges).
    acc = CameraMetricAccumulator()
    for _ in range(5):
        R = _rz(15.5)
        gt = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(torch.eye(3, dtype=D), [1, 0, 0])])
        pred = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(R, R @ torch.tensor([1.0, 0, 0], dtype=D))])
        acc.update(pred, gt)
    m = acc.compute()
    assert m["auc_30"] == pytest.approx(0.5)
    assert m["auc_15"] == 0.0 and m["rra_15"] == 0.0 and m["rta_5"] == 1.0
    assert m["num_clips"] == 5 and m["num_pairs"] == 5


def test_bin_width_differs_between_definitions():
    # 0.98 deg: clean bin [0,1); reference bin 1 (width 30/31 = 0.968). 40 deg: failure in both.
    e = [0.98, 40.0]
    assert auc_pooled(e, 3) == pytest.approx(0.5)  # cumulative [1/2, 1/2, 1/2]
    assert auc_reference(e, 3) == pytest.approx(1 / 3)  # cumulative [0, 1/2, 1/2]
    # mixed example: [0.5, 2.5, 40] -> clean histogram [1,0,1]/3, cumulative [1/3,1/3,2/3]
    assert auc_pooled([0.5, 2.5, 40.0], 3) == pytest.approx(4 / 9)
    h = reference_histogram(torch.tensor([0.5, 2.5, 40.0, 30.0]))
    assert h.shape == (31,) and h.sum() == pytest.approx(0.75) and h[30] == pytest.approx(0.25)


def test_reference_per_batch_average_matters_only_for_unequal_clip_lengths():
    gt_a = _random_clip(3, 5)  # 3 pairs, perfect prediction -> AUC 1
    gt_b = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(torch.eye(3, dtype=D), [1, 0, 0])])
    pred_b = torch.stack([gt_b[0], _ext(_rz(40), [1, 0, 0])])  # 1 pair, 40 degrees -> AUC 0
    per_clip = CameraMetricAccumulator("reference", batch_size=1)
    one_batch = CameraMetricAccumulator("reference", batch_size=2)
    clean = CameraMetricAccumulator("clean")
    for acc in (per_clip, one_batch, clean):
        acc.update(gt_a.clone(), gt_a)
        acc.update(pred_b, gt_b)
    assert per_clip.compute()["auc_3"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert one_batch.compute()["auc_3"] == pytest.approx(0.75)  # 3 of 4 pairs perfect
    assert clean.compute()["auc_3"] == pytest.approx(0.75)
    # equal lengths: batch-weighted mean == pooled
    accs = [CameraMetricAccumulator("reference", batch_size=b) for b in (1, 3, 10)]
    for s in range(7):
        gt = _random_clip(4, 100 + s)
        noise = torch.cat([roma.rotvec_to_rotmat(torch.randn(4, 3, dtype=D) * 0.1), torch.zeros(4, 3, 1, dtype=D)], -1)
        pred = compose_extrinsics(noise, gt)
        for acc in accs:
            acc.update(pred, gt)
    vals = [acc.compute() for acc in accs]
    for k in vals[0]:
        assert vals[0][k] == pytest.approx(vals[1][k]) == pytest.approx(vals[2][k])


def test_translation_sign_folding_and_degenerate():
    t = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    assert translation_error_deg(-t, t).item() == pytest.approx(0.0, abs=1e-6)
    a = translation_error_deg(torch.tensor([-1.0, 1.0, 0.0], dtype=D), torch.tensor([1.0, 0.0, 0.0], dtype=D))
    assert a.item() == pytest.approx(45.0)  # 135 folded to 45
    z = torch.zeros(3, dtype=D)
    x = torch.tensor([1.0, 0, 0], dtype=D)
    assert translation_error_deg(z, z).item() == 0.0
    assert translation_error_deg(z, x).item() == 90.0 and translation_error_deg(x, z).item() == 90.0
    assert translation_error_deg(z, z, degenerate="reference").item() == 90.0
    # a clip of pure rotations (all camera centres at the origin): finite metrics, no NaN
    gt = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(_rz(20), [0, 0, 0]), _ext(_rz(40), [0, 0, 0])])
    for compat in ("clean", "reference"):
        m = camera_metrics(gt.clone(), gt, compat)
        assert all(math.isfinite(v) for v in m.values())
    assert camera_metrics(gt.clone(), gt)["auc_30"] == pytest.approx(1.0)
    assert camera_metrics(gt.clone(), gt, "reference")["auc_30"] == 0.0  # the release's 90-degree convention


def test_accumulator_batched_and_per_clip():
    gts = torch.stack([_random_clip(4, s) for s in range(6)])
    noise = torch.cat([roma.rotvec_to_rotmat(torch.randn(6, 4, 3, dtype=D) * 0.05), torch.zeros(6, 4, 3, 1, dtype=D)], -1)
    preds = compose_extrinsics(noise, gts)
    a, b = CameraMetricAccumulator(), CameraMetricAccumulator()
    a.update(preds, gts)
    for i in range(6):
        b.update(preds[i], gts[i])
    ma, mb = a.compute(), b.compute()
    assert ma == mb and ma["num_pairs"] == 36
    per = a.per_clip()
    assert len(per) == 6
    for k in ("auc_3", "auc_30", "rra_5"):
        assert np.mean([p[k] for p in per]) == pytest.approx(ma[k])
    r, t = a.pair_errors()
    assert r.shape == (36,) and (r >= 0).all() and (t <= 90).all()


def test_bad_input_raises():
    gt = _random_clip(4, 0)
    with pytest.raises(ValueError, match="compat"):
        camera_metrics(gt, gt, compat="vggt")
    with pytest.raises(ValueError, match="pred_ext"):
        camera_metrics(gt[..., :3], gt)
    bad = gt.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        camera_metrics(bad, gt)
    with pytest.raises(ValueError, match="differ"):
        camera_metrics(gt[:3], gt)
    with pytest.raises(ValueError, match="no clips"):
        CameraMetricAccumulator().compute()
