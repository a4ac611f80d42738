"""Feature correspondence metric on synthetic views where the exact answer is known.

Scene: a fronto-parallel plane at depth 1, camera A at the origin, camera B moved
0.3 along x; f = 10 px, so every point moves exactly 3 px to the left from A to B.
Features are one-hot codes of the world position (a grid cell id), so the
nearest neighbour is exact and the error is zero; random features are not.
"""

import math

import pytest
import torch

from vidprobe.metrics.correspondence import (
    clip_correspondence_metrics,
    correspondence_metrics,
    sample_features,
    summarize_correspondence,
    visible_correspondences,
)

H, W, F, SHIFT = 12, 16, 10.0, 3
D = torch.float64


def _cams():
    K = torch.tensor([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], dtype=D)
    ea = torch.cat([torch.eye(3, dtype=D), torch.zeros(3, 1, dtype=D)], -1)
    eb = torch.cat([torch.eye(3, dtype=D), torch.tensor([[-SHIFT / F], [0], [0]], dtype=D)], -1)
    return K, ea, eb


def _onehot_features():
    ncol = W + SHIFT  # world columns seen by A or B
    codes_a = torch.arange(H)[:, None] * ncol + torch.arange(W)[None, :]  # A pixel (v,u) sees world column u
    codes_b = torch.arange(H)[:, None] * ncol + torch.arange(W)[None, :] + SHIFT  # B pixel u sees column u+3
    eye = torch.eye(H * ncol)
    return eye[codes_a], eye[codes_b]  # [H, W, C]


def test_one_hot_position_codes_give_zero_error():
    K, ea, eb = _cams()
    fa, fb = _onehot_features()
    depth = torch.ones(H, W, dtype=D)
    m = correspondence_metrics(fa, fb, depth, depth, K, K, ea, eb, max_queries=None)
    assert m["num_visible"] == H * (W - SHIFT)  # columns u < 3 leave B's image
    assert m["num_queries"] == H * (W - SHIFT)
    assert m["corr_err_px"] < 1e-6 and m["corr_err_median_px"] < 1e-6
    assert m["pck_1px"] == 1.0 and m["pck_0.01diag"] == 1.0


def test_random_features_give_large_error():
    K, ea, eb = _cams()
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.randn(H, W, 32, generator=g), torch.randn(H, W, 32, generator=g)
    depth = torch.ones(H, W, dtype=D)
    m = correspondence_metrics(fa, fb, depth, depth, K, K, ea, eb)
    assert m["corr_err_px"] > 3.0
    assert m["pck_1px"] < 0.3
    assert m["pck_20px"] >= m["pck_5px"] >= m["pck_1px"]


def test_occlusion_and_validity_drop_points():
    K, ea, eb = _cams()
    depth_a = torch.ones(H, W, dtype=D)
    depth_b = torch.ones(H, W, dtype=D)
    depth_b[:, 10:13] = 0.5  # something closer in front of 3 columns of B hides the plane there
    corr = visible_correspondences(depth_a, depth_b, K, K, ea, eb)
    assert corr.uv_a.shape[0] == H * (W - SHIFT) - 3 * H
    assert corr.num_candidates == H * W
    # exact sub-pixel targets: 3 px to the left
    assert torch.allclose(corr.uv_b, corr.uv_a - torch.tensor([SHIFT, 0.0], dtype=D), atol=1e-9)
    valid_b = torch.ones(H, W, dtype=torch.bool)
    valid_b[0] = False  # unknown depth on B's first row
    corr2 = visible_correspondences(depth_a, depth_b, K, K, ea, eb, valid_b=valid_b)
    assert corr2.uv_a.shape[0] == (H - 1) * (W - SHIFT - 3)
    # a relative tolerance: a depth within 5% passes
    near = torch.full((H, W), 1.04, dtype=D)
    assert visible_correspondences(depth_a, near, K, K, ea, eb).uv_a.shape[0] == H * (W - SHIFT)
    # world points given directly give the same correspondences
    from vidprobe.geometry import depth_to_world_points

    pts = depth_to_world_points(depth_a, K, ea)
    corr3 = visible_correspondences(depth_a, depth_b, K, K, ea, eb, points_a=pts)
    assert torch.equal(corr3.uv_a, corr.uv_a)


def test_sample_features_bilinear_at_pixels():
    # a 6x8 grid over a 12x16 image; cell k's centre is pixel 2k + 0.5; a linear ramp is reproduced exactly
    ramp_u = (2 * torch.arange(8) + 0.5).float()[None, :, None].expand(6, 8, 1)
    ramp_v = (2 * torch.arange(6) + 0.5).float()[:, None, None].expand(6, 8, 1)
    feats = torch.cat([ramp_u, ramp_v], -1)
    uv = torch.tensor([[1.0, 1.0], [5.0, 7.0], [14.0, 10.0], [7.5, 3.25]], dtype=D)
    out = sample_features(feats, uv, (H, W))
    assert torch.allclose(out.double(), uv, atol=1e-5)
    # pixel-resolution grids are read exactly
    g = torch.randn(H, W, 5)
    ij = torch.tensor([[3.0, 4.0], [15.0, 11.0]], dtype=D)
    assert torch.allclose(sample_features(g, ij, (H, W)), g[[4, 11], [3, 15]])


def test_subsampling_summary_and_clip_pooling():
    K, ea, eb = _cams()
    fa, fb = _onehot_features()
    depth = torch.ones(H, W, dtype=D)
    m = correspondence_metrics(fa, fb, depth, depth, K, K, ea, eb, max_queries=50, seed=3)
    assert m["num_queries"] == 50 and m["num_visible"] == H * (W - SHIFT) and m["corr_err_px"] < 1e-6
    clip = clip_correspondence_metrics(
        torch.stack([fa, fb]), torch.stack([depth, depth]), torch.stack([K, K]), torch.stack([ea, eb]),
        max_queries=None,
    )  # fmt: skip
    assert clip["num_pairs"] == 2 and clip["num_visible"] == 2 * H * (W - SHIFT) and clip["corr_err_px"] < 1e-6
    s = summarize_correspondence(torch.tensor([0.5, 1.5, 3.0, 30.0]), (30, 40), thresholds_px=(1, 2), thresholds_frac=(0.1,))
    assert s["corr_err_px"] == pytest.approx(8.75) and s["pck_1px"] == 0.25 and s["pck_2px"] == 0.5
    assert s["pck_0.1diag"] == 0.75  # 0.1 * 50 px = 5 px
    empty = summarize_correspondence(torch.zeros(0), (H, W))
    assert empty["num_queries"] == 0 and math.isnan(empty["corr_err_px"])
