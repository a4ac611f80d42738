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
    # reference: the release's clamps at 1e-15 floor both angles at ~4e-6 degrees
    tol = 1e-6 if compat == "clean" else 1e-5
    assert torch.allclose(r, torch.tensor([0.0, 10.0, 10.0], dtype=D), atol=tol)
    assert torch.allclose(t, torch.tensor([45.0, 0.0, ANG_12], dtype=D), atol=tol)


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
    assert torch.allclose(t_a, torch.tensor([45.0, 0.0, ANG_12], dtype=D), atol=1e-5)  # 4e-6 floor, see above


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


def _release_angle(a, b, eps=1e-15):
    """The release's rule written out: u = t / (|t| + eps), arccos(sqrt(1 - max(1 - (u.v)^2, eps))), degrees."""
    u = np.asarray(a, dtype=np.float64) / (np.linalg.norm(a) + eps)
    v = np.asarray(b, dtype=np.float64) / (np.linalg.norm(b) + eps)
    return math.degrees(math.acos(math.sqrt(1 - max(1 - float(u @ v) ** 2, eps))))


def test_translation_sign_folding_and_degenerate():
    t = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    assert translation_error_deg(-t, t).item() == pytest.approx(0.0, abs=1e-6)
    a = translation_error_deg(torch.tensor([-1.0, 1.0, 0.0], dtype=D), torch.tensor([1.0, 0.0, 0.0], dtype=D))
    assert a.item() == pytest.approx(45.0)  # 135 folded to 45
    z = torch.zeros(3, dtype=D)
    x = torch.tensor([1.0, 0, 0], dtype=D)
    assert translation_error_deg(z, z).item() == 0.0
    assert translation_error_deg(z, x).item() == 90.0 and translation_error_deg(x, z).item() == 90.0
    assert translation_error_deg(z, z, rule="reference").item() == 90.0  # u = 0: arccos(0)
    with pytest.raises(ValueError, match="rule"):
        translation_error_deg(x, x, rule="vggt")
    # a pure rotation clip (all camera centres at the origin): finite metrics, no NaN
    gt = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(_rz(20), [0, 0, 0]), _ext(_rz(40), [0, 0, 0])])
    for compat in ("clean", "reference"):
        m = camera_metrics(gt.clone(), gt, compat)
        assert all(math.isfinite(v) for v in m.values())
    assert camera_metrics(gt.clone(), gt)["auc_30"] == pytest.approx(1.0)
    assert camera_metrics(gt.clone(), gt, "reference")["auc_30"] == 0.0  # the release's 90 degrees for t = 0


@pytest.mark.parametrize("norm", [1e-12, 1e-10, 3e-14])
def test_reference_tiny_translation_follows_release_normalisation(norm):
    # the release normalises t / (|t| + 1e-15) with no threshold: a translation of norm 1e-12 is shortened to
    # 0.999 of a unit vector, not declared degenerate (vidprobe's clean rule: below 1e-9 -> 90 degrees); the
    # expected values are the release's formula evaluated by hand (_release_angle); the eps bends the angle
    # (parallel vectors: 2.6 degrees at 1e-12, 14.6 at 3e-14)
    tp = norm * np.array([1.0, 0.0, 0.0])
    tg = np.array([1.0, 1.0, 0.0])
    got = translation_error_deg(torch.tensor(tp, dtype=D), torch.tensor(tg, dtype=D), rule="reference").item()
    assert got == pytest.approx(_release_angle(tp, tg), abs=1e-9)
    assert got < 60  # not the 90 degrees of a degenerate translation
    assert translation_error_deg(torch.tensor(tp, dtype=D), torch.tensor(tg, dtype=D)).item() == 90.0
    # through the pair errors: GT frame 1 at `norm` along x, prediction along x too
    gt = torch.stack([_ext(torch.eye(3, dtype=D), [0, 0, 0]), _ext(torch.eye(3, dtype=D), (-tp).tolist())])
    pred = torch.stack([gt[0], _ext(torch.eye(3, dtype=D), [-1.0, 0, 0])])
    _, t_ref = relative_pose_errors(pred, gt, "reference")
    assert t_ref.item() == pytest.approx(_release_angle([1.0, 0, 0], tp), abs=1e-9) and 0 < t_ref.item() < 20
    _, t_clean = relative_pose_errors(pred, gt, "clean")
    assert t_clean.item() == 90.0


def test_nonfinite_predicted_cameras_fail():
    gt = _random_clip(4, 7)
    pred = gt.clone()
    pred[1, 2, 3] = float("nan")  # t_1 of frame 1
    # clean: the whole clip fails, every pair of it, both errors
    r, t = relative_pose_errors(pred, gt, "clean")
    assert torch.isinf(r).all() and torch.isinf(t).all()
    m = camera_metrics(pred, gt)
    assert all(m[k] == 0.0 for k in m)
    # reference, pair by pair (release's inv(P_i) P_j as a 4x4 product): pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3);
    # rotation fails if R_i, t_i or R_j is bad -> pairs with i = 1; translation if R_i, t_i or t_j -> i = 1 or j = 1
    r, t = relative_pose_errors(pred, gt, "reference")
    assert torch.isinf(r).tolist() == [False, False, False, True, True, False]
    assert torch.isinf(t).tolist() == [True, False, False, True, True, False]
    assert torch.allclose(r[~torch.isinf(r)], torch.zeros(4, dtype=D), atol=1e-5)  # the rest is exact
    bad_R = gt.clone()
    bad_R[2, 0, 0] = float("inf")  # R_2
    r, t = relative_pose_errors(bad_R, gt, "reference")
    assert torch.isinf(r).tolist() == [False, True, False, True, False, True]
    assert torch.isinf(t).tolist() == [False, False, False, False, False, True]
    # every failed pair is a failure in the release's histogram, RRA and RTA: 3 of 6 pairs bad
    mr = camera_metrics(bad_R, gt, "reference")
    assert mr["rra_5"] == pytest.approx(0.5) and mr["rta_5"] == pytest.approx(5 / 6)
    assert mr["auc_30"] == pytest.approx(0.5, abs=1e-3)  # the 3 good pairs sit in bin 0 (floor 4e-6 degrees)
    # the accumulators count the failed clip
    for compat in ("clean", "reference"):
        acc = CameraMetricAccumulator(compat)
        acc.update(torch.stack([gt, pred]), torch.stack([gt, gt]))
        out = acc.compute()
        assert out["failed_camera"] == 1.0 and acc.failed() == [False, True]
        assert out["auc_30"] <= 0.75


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
    with pytest.raises(ValueError, match="gt_ext contains NaN"):
        camera_metrics(gt, bad)  # a non-finite ground truth is a data error; a non-finite prediction a failure
    assert camera_metrics(bad, gt)["auc_30"] == 0.0
    with pytest.raises(ValueError, match="differ"):
        camera_metrics(gt[:3], gt)
    with pytest.raises(ValueError, match="no clips"):
        CameraMetricAccumulator().compute()


def test_release_quaternion_angle_equals_geodesic_on_exact_rotations():
    from vidprobe.metrics.camera import rotation_error_deg

    g = torch.Generator().manual_seed(3)
    A = roma.random_rotmat(20, dtype=D, generator=g)
    B = roma.random_rotmat(20, dtype=D, generator=g)
    geo = rotation_error_deg(A, B)
    quat = rotation_error_deg(A, B, rule="release_quaternion")
    assert torch.allclose(geo, quat, atol=1e-6)  # the same angle for orthonormal matrices (floor 4e-6 deg)
    assert rotation_error_deg(_rz(10), torch.eye(3, dtype=D), rule="release_quaternion").item() == pytest.approx(10.0)
    # rotations decoded in float32 are slightly off orthonormal: near zero the two formulas part by ~1e-3 deg,
    # which is why reference mode uses the release's (tests/test_parity_metrics.py compares pair by pair)
    R = (roma.rotvec_to_rotmat(torch.tensor([0.004, 0.0, 0.0], dtype=D)) + 3e-7 * torch.randn(3, 3, generator=g, dtype=D))
    d = (rotation_error_deg(R, torch.eye(3, dtype=D)) - rotation_error_deg(R, torch.eye(3, dtype=D), "release_quaternion"))
    assert d.abs().item() > 1e-5
    with pytest.raises(ValueError, match="rule"):
        rotation_error_deg(A, B, rule="trace")
