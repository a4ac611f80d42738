"""Synthetic generator, native dataset round trip, preview and CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vidprobe import geometry as G
from vidprobe.data.base import DatasetError
from vidprobe.data.native import NativeDataset, frame_path, read_dataset_json
from vidprobe.data.synthetic import (
    Box,
    Cylinder,
    Material,
    Plane,
    Scene,
    Sphere,
    cast_rays,
    generate_clip,
    make_scene,
    write_synthetic_dataset,
)
from vidprobe.data.ply import read_ply, write_ply
from vidprobe.data.preview import write_preview

HW = (40, 64)
T = 9


@pytest.fixture(scope="module")
def clips():
    return {(f, s): generate_clip(f, s, num_frames=T, hw=HW) for f in ("orbit", "walk") for s in (0, 1, 3)}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    write_synthetic_dataset(root, 3, num_frames=6, hw=(24, 40), seed=5, progress=False)
    return root


# ----------------------------------------------------------------------------- renderer


def _mat():
    return Material("checker", torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 0.5)


def test_ray_primitive_intersections_are_exact():
    o = torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.2, 0.5], [0.0, 0.0, 5.0], [0.1, 0.0, 5.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sph = Sphere([0, 0, 1], 1.0, _mat())
    t = sph.intersect(o, d)
    assert t[0] == pytest.approx(3.0) and t[2] == pytest.approx(1.5)  # ray parameter scales with |d|
    assert t[1] == pytest.approx(3.0 - math.sqrt(1 - 0.2**2 - 0.5**2))
    assert math.isinf(t[3])  # pointing away
    box = Box([0, 0, 0.5], [0.5, 0.5, 0.5], yaw=math.pi / 4, material=_mat())
    tb = box.intersect(o, d)
    assert tb[0] == pytest.approx(4.0)
    assert tb[1] == pytest.approx(3.0 - 0.5 * math.sqrt(2) + 0.2)  # the rotated box's corner edge x + |y| = 0.5*sqrt2
    cyl = Cylinder([0, 0, 1], 0.5, 1.0, _mat())
    tc = cyl.intersect(o, d)
    assert tc[0] == pytest.approx(3.0)  # top cap at z = 2
    assert tc[1] == pytest.approx(3.0 - math.sqrt(0.25 - 0.04))
    pl = Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], 2.0, 2.0, _mat())
    tp = pl.intersect(o, d)
    assert tp[0] == pytest.approx(5.0) and math.isinf(tp[1]) and math.isinf(tp[3])
    # the finite extent is honoured
    assert math.isinf(pl.intersect(torch.tensor([[3.0, 0, 1]], dtype=torch.float64), d[:1])[0])


def test_nearest_hit_wins_and_sky_is_a_miss():
    scene = Scene([Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], 10, 10, _mat()), Sphere([0, 0, 1], 1.0, _mat())],
                  torch.tensor([0, 0, 1.0], dtype=torch.float64), 0.3,
                  torch.tensor([0, 0, 1.0], dtype=torch.float64), torch.tensor([1, 1, 1.0], dtype=torch.float64))
    o = torch.tensor([[0, 0, 5.0], [0, 0, 5.0]], dtype=torch.float64)
    d = torch.tensor([[0, 0, -1.0], [0, 0, 1.0]], dtype=torch.float64)
    t, col, idx = cast_rays(scene, o, d)
    assert t[0] == pytest.approx(3.0) and idx[0] == 1
    assert math.isinf(t[1]) and idx[1] == -1
    assert torch.allclose(col[1], torch.tensor([0, 0, 1.0], dtype=torch.float64))  # straight up: sky top colour
    assert (col >= 0).all() and (col <= 1).all()


# ----------------------------------------------------------------------------- clips


def test_deterministic_from_seed(clips):
    a = clips[("orbit", 1)]
    b = generate_clip("orbit", 1, num_frames=T, hw=HW)
    for k in ("images", "depth", "valid", "points", "intrinsics", "extrinsics"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert not torch.equal(a.images, clips[("orbit", 0)].images)
    assert not torch.equal(clips[("walk", 1)].extrinsics, a.extrinsics)
    assert a.meta["sequence"] == "orbit_00001" and a.meta["dataset"] == "synthetic" and a.meta["category"] == "orbit"
    assert torch.equal(a.frame_ids, torch.arange(T)) and torch.equal(a.confidence, torch.ones(T, *HW))


def test_layout_independent_of_resolution_and_frame_count(clips):
    a = clips[("walk", 3)]
    b = generate_clip("walk", 3, num_frames=5, hw=(20, 32))
    # same path parametrised over [0,1]: frames 0, 2, 4, 6, 8 of 9 == frames 0..4 of 5
    assert torch.allclose(a.extrinsics[::2], b.extrinsics, atol=1e-6)
    # same focal in units of the width (horizontal fov)
    assert a.intrinsics[0, 0, 0] / HW[1] == pytest.approx(float(b.intrinsics[0, 0, 0]) / 32)
    assert torch.allclose(a.intrinsics[0, :2, 2], torch.tensor([HW[1] / 2, HW[0] / 2]))


@pytest.mark.parametrize("family", ["orbit", "walk"])
def test_depth_unprojects_to_stored_points(clips, family):
    for s in (0, 1, 3):
        c = clips[(family, s)]
        pts = G.depth_to_world_points(c.depth, c.intrinsics, c.extrinsics)
        v = c.valid
        assert torch.allclose(pts[v], c.points[v], atol=1e-4)
        assert torch.equal(v, c.depth > 0)
        assert (c.points[~v] == 0).all()
        # points are in front of their own camera at exactly the stored depth
        cam = G.world_to_cam(c.points, c.extrinsics)
        assert torch.allclose(cam[..., 2][v], c.depth[v], atol=1e-4)


def _multiview(clip, k, E_k=None):
    """Project frame 0's points into frame k; compare with frame k's depth (inverse depth, bilinear)."""
    E_k = clip.extrinsics[k] if E_k is None else E_k
    P = clip.points[0][clip.valid[0]].double()
    xc = P @ E_k[:3, :3].double().T + E_k[:3, 3].double()
    K = clip.intrinsics[k].double()
    z = xc[:, 2]
    u = K[0, 0] * xc[:, 0] / z + K[0, 2]
    v = K[1, 1] * xc[:, 1] / z + K[1, 2]
    H, W = clip.hw
    inb = (z > 1e-3) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u, v, z = u[inb], v[inb], z[inb]
    u0, v0 = u.floor().long().clamp(max=W - 2), v.floor().long().clamp(max=H - 2)
    fu, fv = u - u0, v - v0
    M = clip.valid[k]
    ok4 = M[v0, u0] & M[v0, u0 + 1] & M[v0 + 1, u0] & M[v0 + 1, u0 + 1]
    inv = 1 / clip.depth[k].double().clamp_min(1e-9)  # inverse depth is affine on planes
    nb = torch.stack([inv[v0, u0], inv[v0, u0 + 1], inv[v0 + 1, u0], inv[v0 + 1, u0 + 1]])
    ok4 &= nb.amax(0) < 1.05 * nb.amin(0)  # skip pixels straddling a depth edge
    i = (inv[v0, u0] * (1 - fu) * (1 - fv) + inv[v0, u0 + 1] * fu * (1 - fv)
         + inv[v0 + 1, u0] * (1 - fu) * fv + inv[v0 + 1, u0 + 1] * fu * fv)
    rel = ((1 / i - z) / z)[ok4]
    return (rel.abs() < 2e-3).float().mean().item(), (rel > 0.02).float().mean().item(), int(ok4.sum())


@pytest.mark.parametrize("family", ["orbit", "walk"])
def test_multiview_consistency(clips, family):
    for s in (0, 1, 3):
        c = clips[(family, s)]
        for k in (1, 2):
            agree, seen_through, n = _multiview(c, k)
            assert n > 200
            assert agree > 0.4, (family, s, k, agree)  # the rest is occluded in frame k
            assert seen_through < 0.01, (family, s, k, seen_through)  # never see past a surface
        # a wrong camera breaks it (the check can fail)
        E = c.extrinsics[2].clone()
        E[:3, 3] += torch.tensor([0.0, 0.0, 0.2])
        assert _multiview(c, 2, E)[0] < 0.15


def test_both_families_have_valid_pixels_moving_cameras_and_sky(clips):
    any_sky = False
    for (fam, s), c in clips.items():
        assert c.valid.float().mean() > 0.5, (fam, s)
        centres = G.camera_centers(c.extrinsics)
        assert (centres[1:] - centres[:-1]).norm(dim=-1).min() > 1e-3  # moves every frame
        assert (centres - centres[0]).norm(dim=-1).max() > 0.5
        R = c.extrinsics[:, :3, :3]
        ang = torch.rad2deg(torch.arccos(((R[0].T @ R[-1]).trace() - 1).clamp(-2, 2) / 2))
        assert ang > 10, (fam, s, ang)
        assert c.images.std() > 0.05  # textured, not flat
        any_sky |= bool((~c.valid).any())
        assert (c.depth[~c.valid] == 0).all()
    assert any_sky


def test_orbit_looks_at_the_object_and_walk_stays_inside():
    scene, path = make_scene("orbit", 2)
    eye, tgt = path(np.linspace(0, 1, 5))
    c = generate_clip("orbit", 2, num_frames=5, hw=HW)
    centre = c.points[:, HW[0] // 2, HW[1] // 2]
    # the centre pixel sees something close to the look-at target (the object), not the far ground
    assert ((centre - torch.tensor(tgt, dtype=torch.float32)).norm(dim=-1) < 1.5).all()
    scene, path = make_scene("walk", 4)
    eye, _ = path(np.linspace(0, 1, 50))
    floor = scene.primitives[0]
    assert (np.abs(eye[:, 0]) < floor.half_u).all() and (np.abs(eye[:, 1]) < floor.half_v).all()
    assert (eye[:, 2] > 1.0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="family"):
        generate_clip("spiral")
    with pytest.raises(ValueError, match="num_frames"):
        generate_clip(num_frames=0)


# ----------------------------------------------------------------------------- native dataset


def test_native_round_trip(dataset_root):
    ds = NativeDataset(dataset_root)
    ids = ds.videos()
    assert ids == ["orbit_00005", "walk_00006", "orbit_00007"]
    assert sorted(ds.videos("train") + ds.videos("test")) == sorted(ids)
    assert not set(ds.videos("train")) & set(ds.videos("test")) and len(ds.videos("test")) == 1
    for vid in ids:
        fam, s = vid.split("_")
        ref = generate_clip(fam, int(s), num_frames=6, hw=(24, 40))
        assert ds.num_frames(vid) == 6
        got = ds.load(vid)
        assert (got.images - ref.images).abs().max() <= 0.5 / 255 + 1e-6
        for k in ("depth", "valid", "points", "intrinsics", "extrinsics", "frame_ids", "confidence"):
            assert torch.equal(getattr(got, k), getattr(ref, k)), k
        assert got.meta["sequence"] == vid and got.meta["dataset"] == "synthetic" and got.meta["category"] == fam
        sub = ds.load(vid, [4, 1])
        assert sub.frame_ids.tolist() == [4, 1]
        assert torch.equal(sub.depth, ref.depth[[4, 1]])
        assert torch.equal(ds.load_images(vid, [2]), got.images[[2]])
    assert len(ds.scan().ok) == 3


def test_writer_resumes_and_refuses_other_params(dataset_root, tmp_path):
    root = tmp_path / "d"
    write_synthetic_dataset(root, 2, num_frames=4, hw=(16, 24), seed=0, progress=False)
    lab0 = root / "orbit_00000" / "labels.safetensors"
    lab1 = root / "walk_00001" / "labels.safetensors"
    m0 = lab0.stat().st_mtime_ns
    lab1.unlink()  # an interrupted video
    write_synthetic_dataset(root, 3, num_frames=4, hw=(16, 24), seed=0, progress=False)
    assert lab0.stat().st_mtime_ns == m0  # finished video skipped
    assert lab1.exists() and (root / "orbit_00002" / "labels.safetensors").exists()
    info = read_dataset_json(root)
    assert info["complete"] and info["videos"] == ["orbit_00000", "walk_00001", "orbit_00002"]
    assert not list(root.rglob("*.tmp"))
    with pytest.raises(DatasetError, match="generator"):
        write_synthetic_dataset(root, 3, num_frames=5, hw=(16, 24), seed=0, progress=False)


def test_native_errors_name_file_and_field(tmp_path):
    root = tmp_path / "d"
    write_synthetic_dataset(root, 3, families=("walk",), num_frames=3, hw=(12, 20), progress=False)
    ds = NativeDataset(root)
    with pytest.raises(DatasetError, match="unknown video id"):
        ds.load("nope")
    with pytest.raises(DatasetError, match="out of range"):
        ds.load("walk_00000", [3])
    # undecodable PNG
    png = frame_path(root / "walk_00001", 2)
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(DatasetError, match=r"000002\.png"):
        ds.load("walk_00001", [2])
    ds.load("walk_00001", [0, 1])  # other frames still fine
    # labels of the wrong size
    other = generate_clip("walk", 9, num_frames=3, hw=(10, 20))
    from vidprobe.data.labels import write_labels_from_clip

    write_labels_from_clip(root / "walk_00002" / "labels.safetensors", other)
    with pytest.raises(DatasetError, match="labels size"):
        NativeDataset(root).load("walk_00002", [0])
    rep = NativeDataset(root).scan()
    assert rep.ok == ["walk_00000"] and set(rep.skipped) == {"walk_00001", "walk_00002"}
    assert "000002.png" in rep.skipped["walk_00001"]
    # dataset.json problems
    dj = root / "dataset.json"
    d = json.loads(dj.read_text())
    del d["splits"]
    dj.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=r"dataset\.json.*'splits'"):
        NativeDataset(root)
    dj.write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json.*invalid JSON"):
        NativeDataset(root)
    with pytest.raises(DatasetError, match="not found"):
        NativeDataset(tmp_path / "missing")


# ----------------------------------------------------------------------------- preview and CLI


def test_ply_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(1000, 3, generator=g)
    cols = torch.randint(0, 256, (1000, 3), generator=g, dtype=torch.uint8)
    p = write_ply(tmp_path / "a.ply", pts, cols)
    rp, rc = read_ply(p)
    assert np.array_equal(rp, pts.numpy()) and np.array_equal(rc, cols.numpy())
    raw = p.read_bytes()
    head = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode("ascii")
    assert head.startswith("ply\nformat binary_little_endian 1.0\n") and "element vertex 1000" in head
    assert len(raw) == len(head) + 1000 * 15  # 3 float32 + 3 uint8 per vertex
    with pytest.raises(ValueError, match="truncated"):
        (tmp_path / "b.ply").write_bytes(p.read_bytes()[:-10])
        read_ply(tmp_path / "b.ply")


def test_preview_from_dataset_and_clips(dataset_root, tmp_path, clips):
    ds = NativeDataset(dataset_root)
    out = write_preview(ds, tmp_path / "pv", frames_per_row=3, max_points=10**6)
    with Image.open(out["contact_sheet"]) as im:
        im.load()
        assert im.mode == "RGB" and im.height > 3 * 96 and im.width > 9 * 40
    pts, cols = read_ply(out["pointcloud"])
    first = ds.load(ds.videos()[0])
    # every valid pixel of the (6-frame) first video, in pixel order
    assert np.allclose(pts, first.points[first.valid].numpy())
    ref_cols = (first.images.permute(0, 2, 3, 1)[first.valid] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(cols, ref_cols)
    out2 = write_preview(list(clips.values()), tmp_path / "pv2", max_points=500)
    pts2, _ = read_ply(out2["pointcloud"])
    assert len(pts2) == 500
    assert not list((tmp_path / "pv2").glob("*.tmp"))


def test_cli_prepare_and_preview(tmp_path):
    from typer.testing import CliRunner

    import vidprobe.data.cli  # noqa: F401 - registers the commands
    from vidprobe.cli import app

    runner = CliRunner()
    out = tmp_path / "syn"
    r = runner.invoke(app, ["prepare", "synthetic", str(out), "--videos", "2", "--frames", "5", "--height", "16",
                            "--width", "24", "--seed", "3", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert NativeDataset(out).videos() == ["orbit_00003", "walk_00004"]
    r = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path / "pv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pv" / "contact_sheet.png").is_file() and (tmp_path / "pv" / "pointcloud.ply").is_file()
    r = runner.invoke(app, ["preview", str(tmp_path / "nothing"), "--out", str(tmp_path / "pv")])
    assert r.exit_code == 2 and "dataset.json" in r.output
    r = runner.invoke(app, ["prepare", "synthetic", "--help"])
    assert r.exit_code == 0 and "--videos" in r.output
