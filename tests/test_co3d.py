"""CO3Dv2: NDC camera conversion, writer -> reader round trips, preprocessing, bad input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vidprobe.data.base import DatasetError
from vidprobe.data.co3d import (
    Co3dDataset,
    crop_box_for_aspect,
    mask_truncation,
    ndc_to_opencv,
    opencv_to_ndc,
    preprocess_co3d,
    write_co3d,
)
from vidprobe.data.synthetic import generate_clip
from vidprobe.geometry import depth_to_world_points, project, world_to_cam

F16_REL = 2.0**-10  # float16 rounding: relative error <= 2^-11, with margin


def _rand_rot(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _p3d_project(X, R, T, f, p, hw, fmt):
    """PyTorch3D convention, written from its documentation (independent of the module):
    X_cam = X_world @ R + T (+X left, +Y up); x_ndc = f X/Z + p; screen (0,0) is the top-left
    corner of the top-left pixel and +X_ndc points left: u_screen = W/2 - x_ndc * s_x.
    The centre of pixel column u is at u_screen = u + 0.5."""
    H, W = hw
    if fmt == "ndc_isotropic":
        sx = sy = min(H, W) / 2
    else:
        sx, sy = W / 2, H / 2
    Xc = X @ R + T
    x_ndc = f[0] * Xc[:, 0] / Xc[:, 2] + p[0]
    y_ndc = f[1] * Xc[:, 1] / Xc[:, 2] + p[1]
    u = W / 2 - x_ndc * sx - 0.5
    v = H / 2 - y_ndc * sy - 0.5
    return np.stack([u, v], -1), Xc[:, 2]


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
@pytest.mark.parametrize("hw", [(48, 80), (90, 40)])
def test_ndc_to_opencv_projects_like_pytorch3d(fmt, hw):
    rng = np.random.default_rng(0)
    for _ in range(5):
        R = _rand_rot(rng)
        T = rng.normal(size=3) + np.array([0, 0, 6.0])
        f = rng.uniform(1.0, 3.0, 2)
        p = rng.uniform(-0.2, 0.2, 2)
        X = rng.normal(size=(50, 3))
        uv_ref, z_ref = _p3d_project(X, R, T, f, p, hw, fmt)
        assert (z_ref > 0).all()
        K, E = ndc_to_opencv(R, T, f, p, hw, fmt)
        Xc = X @ E[:, :3].T + E[:, 3]
        np.testing.assert_allclose(Xc[:, 2], z_ref, rtol=1e-12)  # same depth (z forward in both)
        uv = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
        np.testing.assert_allclose(uv, uv_ref, atol=1e-9)
        back = opencv_to_ndc(K, E, hw, fmt)
        np.testing.assert_allclose(back["R"], R, atol=1e-12)
        np.testing.assert_allclose(back["T"], T, atol=1e-12)
        np.testing.assert_allclose(back["focal_length"], f, atol=1e-12)
        np.testing.assert_allclose(back["principal_point"], p, atol=1e-12)


def test_ndc_conversion_is_not_trivial():
    """Guard against a symmetric bug: the principal point of a centred camera is the image centre."""
    K, E = ndc_to_opencv(np.eye(3), [0, 0, 5], [2.0, 2.0], [0.0, 0.0], (40, 100), "ndc_isotropic")
    assert K[0, 0] == pytest.approx(40.0) and K[0, 2] == pytest.approx(49.5) and K[1, 2] == pytest.approx(19.5)
    assert np.allclose(E[:, :3], np.diag([-1, -1, 1]))


@pytest.fixture(scope="module")
def clips():
    return [generate_clip("orbit", seed=s, num_frames=5, hw=(48, 64)) for s in (0, 1)]


def _read_ann(root, cat):
    return json.loads(gzip.decompress((Path(root) / cat / "frame_annotations.jgz").read_bytes()))


def _write_ann(root, cat, data):
    (Path(root) / cat / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(data).encode()))


def _check_clip(got, want, img_tol):
    assert torch.equal(got.frame_ids, want.frame_ids)
    torch.testing.assert_close(got.intrinsics, want.intrinsics, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.extrinsics, want.extrinsics, atol=1e-4, rtol=0)
    assert torch.equal(got.valid, want.valid & (want.depth > 0))
    v = got.valid
    err = (got.depth[v] - want.depth[v]).abs() / want.depth[v]
    assert err.max() <= F16_REL
    assert (got.depth[~v] == 0).all()
    pts = depth_to_world_points(got.depth, got.intrinsics, got.extrinsics)
    perr = (pts - want.world_points()).norm(dim=-1)[v] / want.depth[v]
    assert perr.max() < 2e-3
    assert (got.images - want.images).abs().mean() < img_tol


@pytest.mark.parametrize("ext,tol", [("png", 1.0 / 255), ("jpg", 0.03)])
def test_roundtrip_exact_ground_truth(tmp_path, clips, ext, tol):
    ids = write_co3d(clips, tmp_path, "toys", depth_scale=0.37, image_ext=ext)
    assert ids == ["toys/orbit_00000", "toys/orbit_00001"]
    ds = Co3dDataset(tmp_path)
    assert ds.videos() == ids
    assert ds.num_frames(ids[0]) == 5
    for vid, clip in zip(ids, clips):
        got = ds.load(vid)
        assert got.meta["category"] == "toys" and got.meta["dataset"] == "co3d"
        _check_clip(got, clip, tol)
    # a frame subset in any order
    sub = ds.load(ids[1], [3, 0])
    _check_clip(sub, clips[1].select([3, 0]), tol)
    assert ds.load_images(ids[0], [2]).shape == (1, 3, 48, 64)
    rep = ds.scan()
    assert rep.ok == ids and not rep.skipped


def test_legacy_intrinsics_format_and_depth_mask(tmp_path, clips):
    clip = clips[0]
    write_co3d([clip], tmp_path, "toys", intrinsics_format="ndc_norm_image_bounds", image_ext="png")
    ann = _read_ann(tmp_path, "toys")
    assert ann[0]["viewpoint"]["intrinsics_format"] == "ndc_norm_image_bounds"
    for e in ann:  # the legacy default when the field is absent
        del e["viewpoint"]["intrinsics_format"]
    _write_ann(tmp_path, "toys", ann)
    got = Co3dDataset(tmp_path).load("toys/orbit_00000")
    torch.testing.assert_close(got.intrinsics, clip.intrinsics, atol=1e-4, rtol=0)
    # depth mask zero -> depth 0 and invalid even where the depth PNG has a value
    from PIL import Image

    mpath = tmp_path / ann[0]["depth"]["mask_path"]
    m = np.zeros((48, 64), np.uint8)
    m[:, :32] = 255
    Image.fromarray(m).save(mpath)
    got = Co3dDataset(tmp_path).load("toys/orbit_00000", [0])
    assert (got.depth[0, :, 32:] == 0).all() and not got.valid[0, :, 32:].any()
    assert got.valid[0, :, :32].sum() == (clip.valid[0, :, :32] & (clip.depth[0, :, :32] > 0)).sum()


def test_splits_from_set_lists_and_reference(tmp_path):
    cl = [generate_clip("orbit", seed=s, num_frames=2, hw=(24, 32)) for s in range(4)]
    names = [f"s{i}" for i in range(4)]
    write_co3d(cl, tmp_path, "cat", sequence_names=names, image_ext="png",
               set_lists={"fewview_dev": {"train": ["s0", "s1", "s2"], "val": ["s3"]}})
    ds = Co3dDataset(tmp_path, subset="fewview_dev")
    assert ds.videos("train") == ["cat/s0", "cat/s1", "cat/s2"]
    assert ds.videos("test") == ["cat/s3"]
    ref = Co3dDataset(tmp_path)
    tr, te = ref.videos("train"), ref.videos("test")
    assert sorted(tr + te) == [f"cat/{n}" for n in names] and len(te) == 1
    with pytest.raises(ValueError):
        ref.videos("val")
    bad = Co3dDataset(tmp_path, subset="nope")
    assert bad.videos("train") == [] and "set_lists_nope.json" in bad.scan().skipped["cat/*"]


def test_frame_level_set_list_is_refused_by_name(tmp_path):
    """CO3D's set lists are lists of frames, ``[sequence_name, frame_number, image_path]`` per split; the
    many-view lists (and any frame-level split) put frames of the *same* sequences in "train" and "val"/"test".
    A split by video cannot follow that; before, every such sequence was dropped from train, leaving it empty."""
    cl = [generate_clip("orbit", seed=s, num_frames=4, hw=(24, 32)) for s in range(2)]
    write_co3d(cl, tmp_path, "cat", sequence_names=["s0", "s1"], image_ext="png")
    rows = [["s0", n, f"cat/s0/images/frame{n:06d}.png"] for n in range(4)]
    sl = tmp_path / "cat" / "set_lists" / "set_lists_manyview_dev_0.json"
    sl.parent.mkdir(parents=True, exist_ok=True)
    sl.write_text(json.dumps({"train": rows[:3], "val": rows[3:], "test": []}))
    ds = Co3dDataset(tmp_path, subset="manyview_dev_0")
    with pytest.raises(DatasetError) as ei:
        ds.videos("train")
    msg = str(ei.value)
    assert "set_lists_manyview_dev_0.json" in msg and "'manyview_dev_0'" in msg and "s0" in msg
    assert "splits frames within sequences" in msg and "subset=None" in msg
    # disjoint sequences are still fine
    sl.write_text(json.dumps({"train": rows, "val": [["s1", 0, "cat/s1/images/frame000000.png"]], "test": []}))
    ok = Co3dDataset(tmp_path, subset="manyview_dev_0")
    assert ok.videos("train") == ["cat/s0"] and ok.videos("test") == ["cat/s1"]


def test_labels_dir_replaces_ground_truth(tmp_path, clips):
    from vidprobe.data.labels import write_labels_from_clip

    clip = clips[0]
    write_co3d([clip], tmp_path / "data", "toys")
    write_labels_from_clip(tmp_path / "labels" / "toys" / "orbit_00000.safetensors", clip)
    got = Co3dDataset(tmp_path / "data", labels_dir=tmp_path / "labels").load("toys/orbit_00000", [4, 1])
    want = clip.select([4, 1])
    assert torch.equal(got.depth, want.depth)  # exact: no float16 on this path
    assert torch.equal(got.extrinsics, want.extrinsics) and got.confidence is not None
    with pytest.raises(DatasetError, match="orbit_00001.safetensors"):
        write_co3d([clips[1]], tmp_path / "data", "toys")
        Co3dDataset(tmp_path / "data", labels_dir=tmp_path / "labels").load("toys/orbit_00001", [0])


# ----------------------------------------------------------------------------- preprocessing


def _object_mask(clip, radius):
    p = clip.world_points()
    return ((p[..., :2].norm(dim=-1) < radius) & (p[..., 2] > 0.02) & clip.valid).float()


def test_crop_box_geometry():
    x0, y0, w, h = crop_box_for_aspect((40, 30, 59, 41), (200, 300))
    assert w * 9 == h * 16 and w >= 20 and h >= 12
    assert x0 <= 40 and x0 + w > 59 and y0 <= 30 and y0 + h > 41
    # near the border: shifted inside the image
    x0, y0, w, h = crop_box_for_aspect((0, 0, 10, 10), (100, 100))
    assert (x0, y0) == (0, 0) and w * 9 == h * 16
    # object taller than any 16:9 box that fits a portrait image: largest box, truncated
    x0, y0, w, h = crop_box_for_aspect((0, 0, 35, 79), (80, 36))
    assert (w, h) == (32, 18)
    m = np.ones((80, 36), bool)
    assert mask_truncation(m, (x0, y0, w, h)) == pytest.approx(1 - 32 * 18 / (80 * 36))
    assert mask_truncation(np.zeros((4, 4), bool), (0, 0, 2, 2)) is None


def test_preprocess_crop_cameras_and_rejection(tmp_path):
    keep = generate_clip("orbit", seed=2, num_frames=6, hw=(54, 96))
    tall = generate_clip("orbit", seed=3, num_frames=6, hw=(80, 48))
    short = generate_clip("orbit", seed=4, num_frames=3, hw=(54, 96))
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_co3d([keep, short], src, "a", sequence_names=["keep", "short"], masks=[_object_mask(keep, 0.9), None], image_ext="png")
    write_co3d([tall], src, "b", sequence_names=["tall"], masks=[tall.valid.float()], image_ext="png")
    out_hw = (36, 64)
    rep = preprocess_co3d(src, dst, out_hw=out_hw, num_frames=4, progress=False)
    assert rep.kept == ["a/keep"]
    assert rep.rejected["a/short"].startswith("too few frames")
    assert rep.rejected["b/tall"].startswith("truncation") and rep.truncation["b/tall"] > 0.25
    assert rep.truncation["a/keep"] == 0.0
    assert json.loads((dst / "preprocess_report.json").read_text())["kept"] == ["a/keep"]

    x0, y0, w, h = rep.crops["a/keep"]
    assert w * 9 == h * 16
    union = _object_mask(keep, 0.9)[:4].amax(0) >= 0.5
    ys, xs = torch.nonzero(union, as_tuple=True)
    assert x0 <= xs.min() and xs.max() < x0 + w and y0 <= ys.min() and ys.max() < y0 + h

    ds = Co3dDataset(dst)
    assert ds.videos() == ["a/keep"] and ds.num_frames("a/keep") == 4
    got = ds.load("a/keep")
    assert got.images.shape == (4, 3, *out_hw)
    torch.testing.assert_close(got.extrinsics, keep.extrinsics[:4], atol=1e-5, rtol=0)
    # the new cameras project known 3D points where crop+resize moved their pixels
    sx, sy = out_hw[1] / w, out_hw[0] / h
    pts = keep.world_points()[:4]
    uv_new = project(world_to_cam(pts, got.extrinsics), got.intrinsics)
    uv_old = project(world_to_cam(pts, keep.extrinsics[:4]), keep.intrinsics[:4])
    want = torch.stack([(uv_old[..., 0] + 0.5 - x0) * sx - 0.5, (uv_old[..., 1] + 0.5 - y0) * sy - 0.5], -1)
    v = keep.valid[:4]
    assert (uv_new - want)[v].abs().max() < 1e-3
    # depth is the source depth at the nearest source pixel of each output pixel centre (exact float16 values)
    src_ds = Co3dDataset(src)
    d_src = src_ds.load("a/keep", [0, 1, 2, 3]).depth
    us = np.floor(x0 + (np.arange(out_hw[1]) + 0.5) / sx).astype(int)
    vs = np.floor(y0 + (np.arange(out_hw[0]) + 0.5) / sy).astype(int)
    assert torch.equal(got.depth, d_src[:, vs][:, :, us])
    # and the images are the crop, resized
    ref = torch.nn.functional.interpolate(keep.images[:4, :, y0 : y0 + h, x0 : x0 + w], size=out_hw, mode="bilinear",
                                          antialias=True, align_corners=False)
    assert (got.images - ref).abs().mean() < 0.05

    # a second run skips finished categories
    rep2 = preprocess_co3d(src, dst, out_hw=out_hw, num_frames=4, progress=False)
    assert set(rep2.skipped_categories) == {"a", "b"}


def test_preprocess_skips_and_counts_broken_sequences(tmp_path):
    cl = [generate_clip("orbit", seed=s, num_frames=3, hw=(36, 64)) for s in (5, 6)]
    write_co3d(cl, tmp_path / "src", "c", sequence_names=["good", "bad"], image_ext="png")
    ann = _read_ann(tmp_path / "src", "c")
    (tmp_path / "src" / [e for e in ann if e["sequence_name"] == "bad"][1]["image"]["path"]).write_bytes(b"\x89PNG broken")
    rep = preprocess_co3d(tmp_path / "src", tmp_path / "dst", out_hw=(18, 32), num_frames=3, progress=False)
    assert rep.kept == ["c/good"]
    assert rep.rejected["c/bad"].startswith("error") and "frame000002.png" in rep.rejected["c/bad"]
    assert "1 sequences kept, 1 rejected" in rep.summary()


# ----------------------------------------------------------------------------- bad input


@pytest.fixture()
def small_root(tmp_path):
    cl = [generate_clip("orbit", seed=s, num_frames=2, hw=(24, 32)) for s in (7, 8)]
    write_co3d(cl, tmp_path, "cat", sequence_names=["s0", "s1"])
    return tmp_path


def _mutate(root, fn):
    ann = _read_ann(root, "cat")
    for e in ann:
        if e["sequence_name"] == "s1" and e["frame_number"] == 0:
            fn(e)
    _write_ann(root, "cat", ann)


@pytest.mark.parametrize(
    "mutate,field,message",
    [
        (lambda e: e["viewpoint"].pop("focal_length"), "viewpoint.focal_length", "missing"),
        (lambda e: e["viewpoint"].__setitem__("T", [0.0, float("nan"), 1.0]), "viewpoint.T", "non-finite"),
        (lambda e: e["viewpoint"].__setitem__("R", [[1, 0], [0, 1]]), "viewpoint.R", "shape"),
        (lambda e: e["viewpoint"].__setitem__("intrinsics_format", "screen"), "viewpoint.intrinsics_format", "unknown"),
        (lambda e: e["image"].__setitem__("path", "../../outside.jpg"), "image.path", "escapes"),
        (lambda e: e["image"].__setitem__("path", "/etc/hostname"), "image.path", "absolute"),
        (lambda e: e["depth"].__setitem__("path", "cat/../../x.png"), "depth.path", "escapes"),
        (lambda e: e["image"].__setitem__("size", [24, 33]), "image.size", "annotation says"),
        (lambda e: e.pop("frame_number"), "frame_number", "missing"),
    ],
)
def test_bad_annotation_names_file_and_field(small_root, mutate, field, message):
    _mutate(small_root, mutate)
    ds = Co3dDataset(small_root)
    with pytest.raises(DatasetError) as ei:
        ds.load("cat/s1", [0])
    msg = str(ei.value)
    assert f"'{field}'" in msg and message in msg
    assert "frame_annotations.jgz" in msg or ".jpg" in msg
    rep = ds.scan()
    assert rep.ok == ["cat/s0"] and list(rep.skipped) == ["cat/s1"]
    assert ds.load("cat/s0").num_frames == 2


def test_truncated_image_and_depth(small_root):
    ann = _read_ann(small_root, "cat")
    e = next(a for a in ann if a["sequence_name"] == "s1" and a["frame_number"] == 1)
    img = small_root / e["image"]["path"]
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 3])
    ds = Co3dDataset(small_root)
    with pytest.raises(DatasetError, match=r"frame000002\.jpg: field 'image.path': cannot decode"):
        ds.load("cat/s1")
    dep = small_root / next(a for a in ann if a["sequence_name"] == "s0")["depth"]["path"]
    dep.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"geometric\.png: field 'depth.path'"):
        ds.load("cat/s0", [0])
    rep = ds.scan()  # shallow: first frame only, misses the broken frame 1 of s1
    assert rep.ok == ["cat/s1"] and set(rep.skipped) == {"cat/s0"}
    rep = ds.scan(deep=True)
    assert rep.ok == [] and set(rep.skipped) == {"cat/s0", "cat/s1"}
    assert "frame000002.jpg" in rep.skipped["cat/s1"] and "2 skipped" in rep.summary()


@pytest.mark.parametrize("payload", [b"{not json", gzip.compress(b"[{oops", mtime=0), gzip.compress(b'{"a": 1}', mtime=0)])
def test_bad_json_category_is_skipped_and_counted(small_root, payload):
    write_co3d([generate_clip("orbit", seed=9, num_frames=2, hw=(24, 32))], small_root, "other", sequence_names=["z"])
    (small_root / "cat" / "frame_annotations.jgz").write_bytes(payload)
    ds = Co3dDataset(small_root)
    assert ds.videos() == ["other/z"]
    rep = ds.scan()
    assert rep.ok == ["other/z"] and "frame_annotations.jgz" in rep.skipped["cat/*"]
    with pytest.raises(DatasetError, match="frame_annotations.jgz"):
        ds.load("cat/s0")


def test_missing_root_and_unknown_ids(tmp_path, small_root):
    with pytest.raises(DatasetError, match="not a directory"):
        Co3dDataset(tmp_path / "nope")
    ds = Co3dDataset(small_root)
    with pytest.raises(DatasetError, match="no frames of sequence"):
        ds.load("cat/zzz")
    with pytest.raises(DatasetError, match="out of range"):
        ds.load("cat/s0", [5])
    with pytest.raises(DatasetError, match="categories"):
        Co3dDataset(small_root, categories=["dog"])
    assert math.isfinite(float(ds.load("cat/s0").depth.sum()))


def test_cli_prepare_co3d_and_check(tmp_path):
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    cl = [generate_clip("orbit", seed=s, num_frames=3, hw=(36, 64)) for s in (10, 11)]
    write_co3d(cl, tmp_path / "src", "c", sequence_names=["a", "b"], masks=[_object_mask(c, 0.9) for c in cl], image_ext="png")
    r = CliRunner().invoke(app, ["prepare", "co3d", str(tmp_path / "src"), str(tmp_path / "dst"), "--height", "18",
                                 "--width", "32", "--frames", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 sequences kept, 0 rejected" in r.output
    assert Co3dDataset(tmp_path / "dst").load("c/b").images.shape == (2, 3, 18, 32)
    r = CliRunner().invoke(app, ["prepare", "check", str(tmp_path / "dst"), "--deep"])
    assert r.exit_code == 0 and "co3d" in r.output and "2 videos usable, 0 skipped" in r.output
    r = CliRunner().invoke(app, ["prepare", "check", str(tmp_path)])
    assert r.exit_code == 2 and "looked for" in r.output


def test_entry_without_sequence_name_is_counted(small_root):
    _mutate(small_root, lambda e: e.pop("sequence_name"))
    ds = Co3dDataset(small_root)
    assert ds.videos() == ["cat/s0", "cat/s1"] and ds.num_frames("cat/s1") == 1
    rep = ds.scan()
    assert rep.ok == ["cat/s0", "cat/s1"]
    (k, v), = rep.skipped.items()
    assert k == "cat/<entry 2>" and "field 'sequence_name'" in v and "frame_annotations.jgz" in v
