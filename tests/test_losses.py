"""Probe losses and ground-truth preparation, with hand-computed examples."""

from __future__ import annotations

import math

import pytest
import roma
import torch

from vidprobe.geometry import depth_to_world_points
from vidprobe.probe.config import ProbeConfig
from vidprobe.probe.losses import (
    NONFINITE_COUNTS,
    LossConfig,
    LossConfigError,
    NonFiniteLossError,
    camera_loss,
    prepare_targets,
    probe_loss,
)
from vidprobe.probe.model import Probe


def make_gt(B=2, S=3, H=6, W=8, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[9.0, 0, W / 2], [0, 8.0, H / 2], [0, 0, 1]]).expand(B, S, 3, 3).clone()
    torch.manual_seed(seed)
    R = roma.random_rotmat((B, S))
    t = torch.randn(B, S, 3, generator=g)
    E = torch.cat([R, t[..., None]], dim=-1)
    depth = 1 + 2 * torch.rand(B, S, H, W, generator=g)
    valid = torch.rand(B, S, H, W, generator=g) > 0.2
    conf = 1 + 2 * torch.rand(B, S, H, W, generator=g)
    return {
        "points": depth_to_world_points(depth, K, E),
        "depth": depth,
        "valid": valid,
        "confidence": conf,
        "extrinsics": E,
        "intrinsics": K,
    }


def perfect_prediction(tgt: dict, iters: int = 4) -> dict:
    return {
        "points": tgt["points"].clone(),
        "points_conf": torch.ones_like(tgt["depth"]),
        "depth": tgt["depth"].clone(),
        "depth_conf": torch.ones_like(tgt["depth"]),
        "pose_enc": tgt["pose_enc"].clone(),
        "pose_enc_list": [tgt["pose_enc"].clone() for _ in range(iters)],
    }


# ---------------------------------------------------------------------- prepare_targets
@pytest.mark.parametrize("mode", ["first", "all"])
def test_prepare_targets_identity_first_frame_and_unit_scale(mode):
    gt = make_gt()
    tgt = prepare_targets(gt, scale_mode=mode)
    B, S = gt["depth"].shape[:2]
    eye = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=-1)
    assert torch.allclose(tgt["extrinsics"][:, 0], eye.expand(B, 3, 4), atol=1e-5)
    v = tgt["valid"]
    dist = tgt["points"].norm(dim=-1)
    if mode == "first":
        mean = (dist[:, 0] * v[:, 0]).sum((1, 2)) / v[:, 0].sum((1, 2))
    else:
        mean = (dist * v).sum((1, 2, 3)) / v.sum((1, 2, 3))
    assert torch.allclose(mean, torch.ones(B), atol=1e-5)
    # one scale for points, depth and translation: the normalised scene is still consistent
    rebuilt = depth_to_world_points(tgt["depth"], tgt["intrinsics"], tgt["extrinsics"])
    assert torch.allclose(rebuilt[v], tgt["points"][v], atol=1e-4)
    assert torch.allclose((tgt["depth"] * tgt["scale"][:, None, None, None])[v], gt["depth"][v], atol=1e-5)
    assert (tgt["depth"][~v] == 0).all() and (tgt["points"][~v] == 0).all()  # invalid pixels zeroed
    # pose encoding: frame 0 is the identity (t = 0, q = (0, 0, 0, 1)), fov from the intrinsics
    pe = tgt["pose_enc"]
    assert pe.shape == (B, S, 9)
    assert torch.allclose(pe[:, 0, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]).expand(B, 7), atol=1e-5)
    assert torch.allclose(pe[..., 7], torch.full((B, S), 2 * math.atan(3 / 8.0)), atol=1e-6)
    assert torch.allclose(pe[..., 8], torch.full((B, S), 2 * math.atan(4 / 9.0)), atol=1e-6)


def test_prepare_targets_invariant_to_world_similarity():
    gt = make_gt()
    s = 3.7
    R = roma.random_rotmat()
    t = torch.tensor([1.0, -2.0, 0.5])
    moved = dict(gt)
    moved["points"] = s * (gt["points"] @ R.T + t)
    Re, te = gt["extrinsics"][..., :3], gt["extrinsics"][..., 3]
    new_R = Re @ R.T
    new_t = s * te - s * (new_R @ t)
    moved["extrinsics"] = torch.cat([new_R, new_t[..., None]], dim=-1)
    moved["depth"] = s * gt["depth"]
    a, b = prepare_targets(gt), prepare_targets(moved)
    for k in ("points", "depth", "extrinsics", "pose_enc"):
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    assert torch.allclose(b["scale"], s * a["scale"], rtol=1e-5)


def test_prepare_targets_bad_input_names_field():
    gt = make_gt()
    bad = dict(gt, intrinsics=gt["intrinsics"][..., :2, :])
    with pytest.raises(ValueError, match="intrinsics"):
        prepare_targets(bad)
    with pytest.raises(KeyError, match="extrinsics"):
        prepare_targets({k: v for k, v in gt.items() if k != "extrinsics"})
    with pytest.raises(ValueError, match="scale_mode"):
        prepare_targets(gt, scale_mode="median")


def test_non_finite_gt_on_invalid_pixels_is_ignored():
    gt = make_gt()
    total, _ = probe_loss(perfect_prediction(prepare_targets(gt)), gt)
    dirty = {k: v.clone() for k, v in gt.items()}
    inv = ~dirty["valid"]
    dirty["points"][inv] = float("nan")
    dirty["depth"][inv] = float("inf")
    tgt = prepare_targets(dirty)
    assert torch.isfinite(tgt["points"]).all() and torch.isfinite(tgt["depth"]).all()
    pred = perfect_prediction(prepare_targets(gt))
    pred["depth"] = pred["depth"] + 0.1
    l_clean, _ = probe_loss(pred, gt)
    l_dirty, _ = probe_loss(pred, dirty)
    assert torch.isfinite(l_dirty) and torch.allclose(l_clean, l_dirty)
    assert total == 0


# ------------------------------------------------------------------------ zero / minimal loss
@pytest.mark.parametrize("conf_mode", ["gt_weighted", "none"])
def test_loss_is_zero_for_perfect_predictions(conf_mode):
    gt = make_gt()
    cfg = LossConfig(conf_mode=conf_mode)
    tgt = prepare_targets(gt, cfg.scale_mode)
    total, terms = probe_loss(perfect_prediction(tgt), gt, cfg=cfg)
    assert float(total) == pytest.approx(0.0, abs=1e-6)
    assert set(terms) == {"points", "depth", "camera", "camera_T", "camera_R", "camera_fov", "total"}
    # points are compared after each map is divided by its mean distance: a scaled prediction is perfect
    pred = perfect_prediction(tgt)
    pred["points"] = 2.5 * pred["points"]
    assert float(probe_loss(pred, gt, cfg=cfg)[1]["points"]) == pytest.approx(0.0, abs=1e-5)
    off = LossConfig(conf_mode=conf_mode, normalize_points=False)
    assert float(probe_loss(pred, gt, cfg=off)[1]["points"]) > 0.5
    # a wrong prediction is penalised
    pred = perfect_prediction(tgt)
    pred["pose_enc_list"][-1] = pred["pose_enc_list"][-1] + 0.1
    assert float(probe_loss(pred, gt, cfg=cfg)[1]["camera"]) > 0


def test_predicted_confidence_minimum_is_the_log_term():
    gt = make_gt()
    cfg = LossConfig(conf_mode="predicted", conf_alpha=0.2)
    tgt = prepare_targets(gt)
    pred = perfect_prediction(tgt)
    g = torch.Generator().manual_seed(1)
    pred["points_conf"] = 1 + torch.rand(tgt["depth"].shape, generator=g)
    pred["depth_conf"] = 1 + 3 * torch.rand(tgt["depth"].shape, generator=g)
    _, terms = probe_loss(pred, gt, cfg=cfg)
    v = tgt["valid"]
    assert float(terms["points"]) == pytest.approx(float(-0.2 * pred["points_conf"][v].log().mean()), rel=1e-5)
    assert float(terms["depth"]) == pytest.approx(float(-0.2 * pred["depth_conf"][v].log().mean()), rel=1e-5)
    pred["points_conf"] = torch.ones_like(pred["points_conf"])
    assert float(probe_loss(pred, gt, cfg=cfg)[1]["points"]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(KeyError, match="depth_conf"):
        probe_loss({k: v for k, v in pred.items() if k != "depth_conf"}, gt, cfg=cfg)


# ------------------------------------------------------------------------- hand examples
def _hand_targets(depth, valid, conf, points=None):
    B, S, H, W = depth.shape
    return {
        "points": points if points is not None else torch.zeros(B, S, H, W, 3),
        "depth": depth,
        "valid": valid,
        "confidence": conf,
        "pose_enc": torch.zeros(B, S, 9),
    }


def test_depth_loss_confidence_modes_by_hand():
    tgt = _hand_targets(
        depth=torch.tensor([1.0, 2.0, 0.0]).reshape(1, 1, 1, 3),
        valid=torch.tensor([True, True, False]).reshape(1, 1, 1, 3),
        conf=torch.tensor([1.0, 3.0, 5.0]).reshape(1, 1, 1, 3),
    )
    pred = {"depth": torch.tensor([2.0, 4.0, 9.0]).reshape(1, 1, 1, 3), "depth_conf": torch.tensor([1.0, math.e, 7.0]).reshape(1, 1, 1, 3)}
    # errors 1 and 2 on the valid pixels; the invalid one (error 9) is ignored
    for mode, want in [("gt_weighted", (1 * 1 + 3 * 2) / 2), ("none", 1.5), ("predicted", (1 * 1 - 0.0 + math.e * 2 - 0.2) / 2)]:
        _, terms = probe_loss(pred, tgt, cfg=LossConfig(conf_mode=mode), prepared=True)
        assert float(terms["depth"]) == pytest.approx(want, rel=1e-6), mode
    # weights
    total, _ = probe_loss(pred, tgt, cfg=LossConfig(conf_mode="none", depth_weight=2.0), prepared=True)
    assert float(total) == pytest.approx(3.0)


def test_points_loss_by_hand():
    valid = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    tgt = _hand_targets(torch.ones(1, 1, 1, 2), valid, torch.tensor([2.0, 1.0]).reshape(1, 1, 1, 2))
    pred = {"points": torch.tensor([[0.0, 0, 0], [3, 4, 0]]).reshape(1, 1, 1, 2, 3)}
    _, t = probe_loss(pred, tgt, cfg=LossConfig(normalize_points=False), prepared=True)
    assert float(t["points"]) == pytest.approx((2 * 0 + 1 * 5) / 2)
    # normalised: pred [[1,0,0],[0,3,0]] / 2 and GT [[2,0,0],[0,2,0]] / 2 -> errors 0.5, 0.5
    tgt["points"] = torch.tensor([[2.0, 0, 0], [0, 2, 0]]).reshape(1, 1, 1, 2, 3)
    tgt["confidence"] = torch.ones(1, 1, 1, 2)
    pred = {"points": torch.tensor([[1.0, 0, 0], [0, 3, 0]]).reshape(1, 1, 1, 2, 3)}
    _, t = probe_loss(pred, tgt, cfg=LossConfig(), prepared=True)
    assert float(t["points"]) == pytest.approx(0.5)


def test_camera_stage_weights_by_hand():
    gt_pose = torch.randn(2, 3, 9)
    deltas = [0.4, 0.3, 0.2, 0.1]
    preds = [gt_pose + d for d in deltas]
    n = 4
    huber = sum(0.6 ** (n - i - 1) * (1.0 + 1.0 + 0.5) * 0.5 * d * d for i, d in enumerate(deltas)) / n
    l1 = sum(0.6 ** (n - i - 1) * (1.0 + 1.0 + 0.5) * d for i, d in enumerate(deltas)) / n
    assert float(camera_loss(preds, gt_pose, LossConfig())["camera"]) == pytest.approx(huber, rel=1e-5)
    assert float(camera_loss(preds, gt_pose, LossConfig(camera_loss="l1"))["camera"]) == pytest.approx(l1, rel=1e-5)
    # the linear branch of the Huber loss (|e| > 1): |e| - 0.5; translation only, one step
    p = gt_pose.clone()
    p[..., :3] += 3.0
    parts = camera_loss([p], gt_pose, LossConfig())
    assert float(parts["camera"]) == pytest.approx(2.5, rel=1e-5)
    assert float(parts["camera_T"]) == pytest.approx(2.5, rel=1e-5) and float(parts["camera_R"]) == 0
    # only the FoV is wrong: weighted by 0.5
    p = gt_pose.clone()
    p[..., 7:] += 0.2
    assert float(camera_loss([p], gt_pose, LossConfig(camera_loss="l1"))["camera"]) == pytest.approx(0.5 * 0.2, rel=1e-5)
    # via probe_loss (uses the list, not the final pose alone)
    tgt = {"pose_enc": gt_pose}
    _, terms = probe_loss({"pose_enc": preds[-1], "pose_enc_list": preds}, tgt, cfg=LossConfig(), prepared=True)
    assert float(terms["camera"]) == pytest.approx(huber, rel=1e-5)
    assert set(terms) == {"camera", "camera_T", "camera_R", "camera_fov", "total"}


def test_depth_gradient_term_by_hand():
    H, W = 3, 4
    g = torch.rand(1, 1, H, W) + 1
    tgt = _hand_targets(g, torch.ones(1, 1, H, W, dtype=torch.bool), torch.ones(1, 1, H, W))
    cfg = LossConfig(conf_mode="none", depth_grad_weight=1.0)
    _, terms = probe_loss({"depth": g + 0.7}, tgt, cfg=cfg, prepared=True)
    assert float(terms["depth_grad"]) == pytest.approx(0.0, abs=1e-6)  # a constant offset has no gradient
    assert float(terms["depth"]) == pytest.approx(0.7, rel=1e-5)
    ramp = 0.5 * torch.arange(W, dtype=torch.float32).expand(1, 1, H, W)
    _, terms = probe_loss({"depth": g + ramp}, tgt, cfg=cfg, prepared=True)
    nx, ny = H * (W - 1), (H - 1) * W
    want_grad = 0.5 * nx / (nx + ny)
    assert float(terms["depth_grad"]) == pytest.approx(want_grad, rel=1e-5)
    assert float(terms["depth"]) == pytest.approx(float(ramp.mean()) + want_grad, rel=1e-5)
    _, terms = probe_loss({"depth": g + ramp}, tgt, cfg=LossConfig(conf_mode="none"), prepared=True)
    assert "depth_grad" not in terms  # off by default


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "field,term",
    [("depth", "depth"), ("points", "points"), ("pose_t", "camera_T"), ("pose_fov", "camera_fov")],
)
def test_non_finite_loss_raises_and_counts(field, term):
    gt = make_gt()
    tgt = prepare_targets(gt)
    pred = perfect_prediction(tgt)
    v = tgt["valid"]
    if field == "depth":
        pred["depth"][v.nonzero()[0].tolist()] = float("nan")
    elif field == "points":
        pred["points"][tuple(v.nonzero()[0].tolist())] = float("inf")
    elif field == "pose_t":
        pred["pose_enc_list"][0][0, 1, 0] = float("inf")
    else:
        pred["pose_enc_list"][2][0, 1, 8] = float("nan")
    before = NONFINITE_COUNTS[term]
    with pytest.raises(NonFiniteLossError, match=term) as info:
        probe_loss(pred, gt)
    assert info.value.term == term
    assert NONFINITE_COUNTS[term] == before + 1


def test_shape_mismatch_and_empty_predictions():
    gt = make_gt()
    tgt = prepare_targets(gt)
    with pytest.raises(ValueError, match="predictions.depth"):
        probe_loss({"depth": tgt["depth"][..., :-1]}, gt)
    with pytest.raises(KeyError, match="predictions"):
        probe_loss({}, gt)


def test_loss_config_validation():
    with pytest.raises(LossConfigError, match="conf_mode"):
        LossConfig(conf_mode="learned")
    with pytest.raises(LossConfigError, match="camera_loss"):
        LossConfig(camera_loss="l2")
    with pytest.raises(LossConfigError, match="scale_mode"):
        LossConfig(scale_mode="median")
    with pytest.raises(LossConfigError, match="points_weight"):
        LossConfig(points_weight=-1)
    with pytest.raises(LossConfigError, match="depht_weight"):
        LossConfig.from_dict({"depht_weight": 1})
    c = LossConfig(scale_mode="all", camera_loss="l1")
    assert LossConfig.from_dict(c.to_dict()) == c
    assert LossConfig().camera_t_weight == 1.0 and LossConfig().camera_fov_weight == 0.5 and LossConfig().camera_gamma == 0.6


# ----------------------------------------------------------------------- end to end
def test_tiny_probe_trains_through_the_loss():
    torch.manual_seed(0)
    H, W = 12, 16
    gt = make_gt(B=2, S=3, H=H, W=W)
    model = Probe(ProbeConfig.preset("tiny", in_channels=16, out_hw=(H, W)))
    feats = torch.randn(2, 3, 3, 4, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, terms = probe_loss(model(feats), gt, (H, W))
        opt.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        opt.step()
        losses.append(float(loss.detach()))
    assert {"points", "depth", "camera"} <= set(terms)
    assert losses[-1] < losses[0]
