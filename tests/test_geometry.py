import math

import roma
import torch

from vidprobe import geometry as G


def _random_extrinsics(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    R = roma.random_rotmat(n, dtype=dtype)
    t = torch.randn(n, 3, 1, generator=g, dtype=dtype)
    return torch.cat([R, t], -1)


def _intrinsics(n, h, w, f=50.0, dtype=torch.float64):
    K = torch.zeros(n, 3, 3, dtype=dtype)
    K[:, 0, 0] = f
    K[:, 1, 1] = f * 1.1
    K[:, 0, 2] = w / 2
    K[:, 1, 2] = h / 2
    K[:, 2, 2] = 1
    return K


def test_invert_and_compose_round_trip():
    E = _random_extrinsics(5)
    ident = G.compose_extrinsics(E, G.invert_extrinsics(E))
    assert torch.allclose(ident[..., :3], torch.eye(3, dtype=E.dtype).expand(5, 3, 3), atol=1e-10)
    assert torch.allclose(ident[..., 3], torch.zeros(5, 3, dtype=E.dtype), atol=1e-10)


def test_unprojected_depth_reproduces_point_map():
    h, w = 12, 16
    E = _random_extrinsics(3, seed=1)
    K = _intrinsics(3, h, w)
    # A world point map, seen by each camera at positive depth.
    cam_pts = torch.rand(3, h, w, 3, dtype=torch.float64) * 2 - 1
    cam_pts[..., 2] = cam_pts[..., 2].abs() + 1.0
    # put them on the pixel rays so that depth fully determines them
    uv = G.project(cam_pts, K)
    world = G.cam_to_world(cam_pts, E)
    depth = G.world_to_cam(world, E)[..., 2]
    # unprojection at integer pixel centres: build points on the pixel grid
    grid_pts = G.unproject_depth(depth, K)
    uv_grid = G.project(grid_pts, K)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    assert torch.allclose(uv_grid[..., 0], u.expand(3, h, w), atol=1e-9)
    assert torch.allclose(uv_grid[..., 1], v.expand(3, h, w), atol=1e-9)
    assert torch.allclose(grid_pts[..., 2], depth, atol=1e-12)
    # world round trip
    wp = G.depth_to_world_points(depth, K, E)
    back = G.world_to_cam(wp, E)
    assert torch.allclose(back, grid_pts, atol=1e-9)
    assert uv.shape == (3, h, w, 2)


def test_pose_encoding_round_trip():
    h, w = 294, 518
    E = _random_extrinsics(7, seed=2, dtype=torch.float32)
    K = _intrinsics(7, h, w, f=300.0, dtype=torch.float32)
    enc = G.encode_pose(E, K, (h, w))
    assert enc.shape == (7, 9)
    assert (enc[:, 6] >= 0).all()  # w >= 0
    E2, K2 = G.decode_pose(enc, (h, w))
    assert torch.allclose(E2, E, atol=1e-5)
    assert torch.allclose(K2, K, atol=1e-5 * 300)
    enc2 = G.encode_pose(E2, K2, (h, w))
    assert torch.allclose(enc2, enc, atol=1e-5)
    # field of view of a known focal length
    assert math.isclose(float(enc[0, 8]), 2 * math.atan(w / 2 / 300.0), rel_tol=1e-6)


def test_umeyama_recovers_exact_sim3():
    g = torch.Generator().manual_seed(3)
    src = torch.randn(200, 3, generator=g, dtype=torch.float64)
    R = roma.random_rotmat(dtype=torch.float64)
    t = torch.randn(3, generator=g, dtype=torch.float64)
    s = torch.tensor(2.7, dtype=torch.float64)
    dst = s * src @ R.T + t
    sim = G.umeyama(src, dst)
    assert torch.allclose(sim.rotation, R, atol=1e-8)
    assert torch.allclose(sim.translation, t, atol=1e-8)
    assert torch.allclose(sim.scale, s, atol=1e-8)
    assert torch.allclose(G.apply_sim3(sim, src), dst, atol=1e-8)
    # without scale: the rotation is still exact
    rig = G.umeyama(src, dst / s, with_scale=False)
    assert torch.allclose(rig.rotation, R, atol=1e-8)
    assert float(rig.scale) == 1.0


def test_umeyama_weights_ignore_outliers():
    g = torch.Generator().manual_seed(4)
    src = torch.randn(100, 3, generator=g, dtype=torch.float64)
    R = roma.random_rotmat(dtype=torch.float64)
    dst = 0.5 * src @ R.T + 1.0
    dst[:10] += 100.0  # outliers
    w = torch.ones(100, dtype=torch.float64)
    w[:10] = 0
    sim = G.umeyama(src, dst, weights=w)
    assert torch.allclose(sim.rotation, R, atol=1e-8)
    assert abs(float(sim.scale) - 0.5) < 1e-8
    unweighted = G.umeyama(src, dst)
    assert abs(float(unweighted.scale) - 0.5) > 1e-3  # the test can fail: outliers matter without weights


def test_rebase_and_normalize():
    h, w, T = 8, 10, 3
    E = _random_extrinsics(T, seed=5)
    K = _intrinsics(T, h, w)
    depth = torch.rand(T, h, w, dtype=torch.float64) * 3 + 1
    pts = G.depth_to_world_points(depth, K, E)
    valid = torch.ones(T, h, w, dtype=torch.bool)
    valid[1, :2] = False
    for mode in ("first", "all"):
        ns = G.normalize_scene(pts, depth, E, valid, mode=mode)
        assert torch.allclose(ns.extrinsics[0, :, :3], torch.eye(3, dtype=E.dtype), atol=1e-10)
        assert torch.allclose(ns.extrinsics[0, :, 3], torch.zeros(3, dtype=E.dtype), atol=1e-10)
        dist = ns.points.norm(dim=-1)
        if mode == "first":
            assert abs(float(dist[0].mean()) - 1) < 1e-9
        else:
            assert abs(float(dist[valid].mean()) - 1) < 1e-9
        # the normalised scene is still consistent: depth + cameras -> points
        again = G.depth_to_world_points(ns.depth, K, ns.extrinsics)
        assert torch.allclose(again, ns.points, atol=1e-9)
    # batched over clips
    ns_b = G.normalize_scene(pts[None].repeat(2, 1, 1, 1, 1), depth[None].repeat(2, 1, 1, 1), E[None].repeat(2, 1, 1, 1), valid[None].repeat(2, 1, 1, 1))
    assert ns_b.scale.shape == (2,)
    assert torch.allclose(ns_b.points[1], G.normalize_scene(pts, depth, E, valid).points)


def test_relative_extrinsics_are_gauge_invariant():
    E = _random_extrinsics(4, seed=6)
    g = _random_extrinsics(1, seed=7)[0]  # a change of world frame
    E2 = G.compose_extrinsics(E, G.invert_extrinsics(g).expand_as(E))
    r1 = G.relative_extrinsics(E[1], E[2])
    r2 = G.relative_extrinsics(E2[1], E2[2])
    assert torch.allclose(r1, r2, atol=1e-9)
