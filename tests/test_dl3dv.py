"""DL3DV (nerfstudio transforms.json / COLMAP): round trips, conventions, bad input; open_dataset."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidprobe.data.base import DatasetError
from vidprobe.data.dl3dv import (
    NERFSTUDIO_APPLIED_TRANSFORM,
    ColmapCamera,
    ColmapImage,
    Dl3dvDataset,
    read_colmap_model,
    write_colmap_model,
    write_dl3dv,
)
from vidprobe.data.synthetic import generate_clip
from vidprobe.geometry import relative_extrinsics


@pytest.fixture(scope="module")
def clip():
    return generate_clip("walk", seed=3, num_frames=5, hw=(36, 64))


def _check_cameras(got, want):
    torch.testing.assert_close(got.intrinsics, want.intrinsics, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.extrinsics, want.extrinsics, atol=1e-4, rtol=0)


def test_roundtrip_transforms(tmp_path, clip):
    assert write_dl3dv(clip, tmp_path, "abc123") == "abc123"
    meta = json.loads((tmp_path / "abc123" / "transforms.json").read_text())
    assert meta["w"] == 256 and meta["frames"][0]["file_path"] == "images/frame_00001.png"
    ds = Dl3dvDataset(tmp_path)
    assert ds.videos() == ["abc123"] and ds.num_frames("abc123") == 5
    got = ds.load("abc123")
    _check_cameras(got, clip)
    assert torch.equal(got.frame_ids, torch.arange(5))
    assert (got.images - clip.images).abs().max() <= 0.5 / 255 + 1e-6  # PNG: 8-bit quantisation only
    assert (got.depth == 0).all() and not got.valid.any()  # DL3DV has no depth
    assert got.meta["camera_model"] == "OPENCV" and got.meta["distortion"]["k1"] == 0.0
    sub = ds.load("abc123", [4, 2])
    _check_cameras(sub, clip.select([4, 2]))
    assert sub.frame_ids.tolist() == [4, 2]


def test_nerfstudio_world_keeps_relative_poses(tmp_path, clip):
    write_dl3dv(clip, tmp_path, "s")
    got = Dl3dvDataset(tmp_path, world="transforms").load("s")
    A = torch.tensor(NERFSTUDIO_APPLIED_TRANSFORM[:, :3], dtype=torch.float32)
    # x_ns = A x_colmap  =>  R_ns = R A^T, t unchanged
    torch.testing.assert_close(got.extrinsics[..., :3], clip.extrinsics[..., :3] @ A.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.extrinsics[..., 3], clip.extrinsics[..., 3], atol=1e-4, rtol=0)
    rel_got = relative_extrinsics(got.extrinsics[1:], got.extrinsics[:1])
    rel_want = relative_extrinsics(clip.extrinsics[1:], clip.extrinsics[:1])
    torch.testing.assert_close(rel_got, rel_want, atol=1e-4, rtol=0)
    assert not torch.allclose(got.extrinsics, clip.extrinsics, atol=1e-2)  # the world really differs


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_roundtrip_colmap(tmp_path, clip, fmt):
    write_dl3dv(clip, tmp_path, "scene", colmap=fmt, applied_transform=False)
    cams, imgs = read_colmap_model(tmp_path / "scene" / "colmap" / "sparse" / "0")
    assert len(cams) == 5 and sorted(i.name for i in imgs.values())[0] == "frame_00001.png"
    got = Dl3dvDataset(tmp_path, camera_source="colmap").load("scene")
    _check_cameras(got, clip)
    assert got.meta["world"] == "colmap"
    # its transforms.json has no applied_transform and the scene has colmap/sparse/0: nerfstudio (and vidprobe)
    # then assume the older ns-process-data transform, so read from transforms.json the world is not the clip's
    via_json = Dl3dvDataset(tmp_path).load("scene")
    assert via_json.meta["applied_transform"] == "nerfstudio_colmap_default"
    L = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]])  # x_file = L x_colmap read as the COLMAP world
    torch.testing.assert_close(via_json.extrinsics[..., :3], clip.extrinsics[..., :3] @ L, atol=1e-4, rtol=0)


def test_nested_layout_window_per_frame_intrinsics_and_splits(tmp_path, clip):
    K = clip.intrinsics.clone()
    K[:, 0, 0] *= torch.linspace(0.8, 1.2, 5)
    varied = type(clip)(**{**clip.__dict__, "intrinsics": K})
    for i in range(4):
        write_dl3dv(varied, tmp_path / "1K", f"h{i}", per_frame_intrinsics=True, colmap=None)
    ds = Dl3dvDataset(tmp_path, window=3, max_scenes=3)
    assert ds.videos() == ["1K/h0", "1K/h1", "1K/h2"]
    assert ds.num_frames("1K/h1") == 3
    got = ds.load("1K/h1")
    _check_cameras(got, varied.select([0, 1, 2]))
    with pytest.raises(DatasetError, match="out of range"):
        ds.load("1K/h1", [3])
    tr, te = ds.videos("train"), ds.videos("test")
    assert sorted(tr + te) == ds.videos() and len(te) == 1


def test_opengl_convention_and_resolution_scaling_by_hand(tmp_path):
    """An independent hand-made scene: camera at the origin looking down -z (OpenGL), full res 400x200."""
    d = tmp_path / "hand"
    (d / "images_4").mkdir(parents=True)
    Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(d / "images_4" / "frame_00001.png")
    tr = {"camera_model": "PINHOLE", "fl_x": 400.0, "fl_y": 360.0, "cx": 200.0, "cy": 100.0, "w": 400, "h": 200,
          "frames": [{"file_path": "images/frame_00001.png", "transform_matrix": np.eye(4).tolist()}]}
    (d / "transforms.json").write_text(json.dumps(tr))
    c = Dl3dvDataset(tmp_path).load("hand")
    K, E = c.intrinsics[0], c.extrinsics[0]
    # quarter resolution; pixel corners -> pixel centres
    torch.testing.assert_close(K, torch.tensor([[100.0, 0, 49.5], [0, 90.0, 24.5], [0, 0, 1]]))
    # a world point right (+x), up (+y) and in front (-z) of the OpenGL camera
    X = torch.tensor([1.0, 1.0, -5.0])
    x = E[:, :3] @ X + E[:, 3]
    assert x[2] == pytest.approx(5.0)  # in front: positive OpenCV depth
    u, v = (K @ x)[:2] / x[2]
    assert u == pytest.approx(49.5 + 100 / 5) and v == pytest.approx(24.5 - 90 / 5)  # right of and above the centre


def test_labels_file_provides_depth(tmp_path, clip):
    from vidprobe.data.labels import write_labels_from_clip

    write_dl3dv(clip, tmp_path / "d", "s", colmap=None)
    write_labels_from_clip(tmp_path / "lab" / "s.safetensors", clip)
    got = Dl3dvDataset(tmp_path / "d", labels_dir=tmp_path / "lab").load("s", [1, 3])
    want = clip.select([1, 3])
    assert torch.equal(got.depth, want.depth) and torch.equal(got.valid, want.valid)
    torch.testing.assert_close(got.world_points(), want.world_points())
    # labels for a window only: frames outside it are refused with the file named
    write_labels_from_clip(tmp_path / "lab" / "s.safetensors", clip.select([0, 1]))
    with pytest.raises(DatasetError, match=r"s\.safetensors: field 'frame_ids'"):
        Dl3dvDataset(tmp_path / "d", labels_dir=tmp_path / "lab").load("s", [1, 3])


# ----------------------------------------------------------------------------- nerfstudio's own rules
# Facts from nerfstudio-project/nerfstudio at 50e0e3c70c775e89333256213363badbf074f29d:
# * nerfstudio/process_data/colmap_utils.py, colmap_to_json (l. 390-494): w2c = [qvec2rotmat(qvec) | tvec]
#   (COLMAP's scalar-first quaternion), c2w = inv(w2c); c2w[0:3, 1:3] *= -1 (OpenCV -> OpenGL, l. 446);
#   unless keep_original_world_coordinate: c2w = c2w[[0, 2, 1, 3], :]; c2w[2, :] *= -1 (l. 447-449) and
#   applied_transform = eye(4)[:3][[0, 2, 1]] with row 2 negated is written (l. 474-479); file_path
#   "./images/<name>" (l. 454); one camera -> its parameters at the top level (l. 427-428) by
#   parse_colmap_camera_params (l. 187-): w, h, fl_x, fl_y, cx, cy, k1, k2, p1, p2, camera_model OPENCV.
# * nerfstudio/data/dataparsers/nerfstudio_dataparser.py: fx_fixed = "fl_x" in meta ... (l. 104-109) and per
#   frame only `if not fx_fixed` (l. 137-154): a top-level value wins for every frame; distort_fixed when any of
#   k1, k2, k3, p1, p2, distortion_params is at the top level (l. 110-114, no k4); then distortion_params if
#   present, else get_distortion_params(k1, k2, k3, k4, p1, p2) with 0 for missing keys (l. 279-291); per frame
#   likewise (l. 155-167); no "applied_transform" but colmap/sparse/0 exists -> [[0,1,0,0],[1,0,0,0],[0,0,-1,0]]
#   "the effective value of applied_transform that was being used before we added the applied_transform
#   field" (l. 321-329); camera_model from the top level only (l. 268-271).
# * nerfstudio/cameras/camera_utils.py, get_distortion_params (l. 352-372): [k1, k2, k3, k4, p1, p2].


def _qvec2rotmat(q):
    """COLMAP's scalar-first unit quaternion (w, x, y, z) -> rotation matrix, written out."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y]])


def _colmap_scene(d: Path, n: int = 3, seed: int = 0):
    """A COLMAP model (one OPENCV camera, full resolution 96x64) and 24x16 images_4 frames."""
    rng = np.random.default_rng(seed)
    cam = ColmapCamera(1, "OPENCV", 96, 64, [80.0, 78.0, 47.0, 33.0, 0.01, -0.02, 0.001, 0.002])
    ims = []
    for k in range(n):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * np.sign(q[0])
        ims.append(ColmapImage(k + 1, q.tolist(), rng.normal(size=3).tolist(), 1, f"frame_{k + 1:05d}.png"))
        (d / "images_4").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(d / "images_4" / ims[-1].name)
    write_colmap_model(d / "colmap" / "sparse" / "0", [cam], ims)
    return cam, ims


def _w2c(im):
    return np.concatenate([_qvec2rotmat(im.qvec), np.asarray(im.tvec)[:, None]], 1)


def _ns_transforms(cam, ims, world_transform, write_key: bool) -> dict:
    """transforms.json as colmap_to_json writes it; ``world_transform`` [3,4] applied to every c2w."""
    frames = []
    for im in ims:
        w2c = np.eye(4)
        w2c[:3] = _w2c(im)
        c2w = np.linalg.inv(w2c)
        c2w[0:3, 1:3] *= -1
        A = np.eye(4)
        A[:3] = world_transform
        frames.append({"file_path": f"./images/{im.name}", "transform_matrix": (A @ c2w).tolist(), "colmap_im_id": im.image_id})
    fx, fy, cx, cy, k1, k2, p1, p2 = cam.params
    out = {"w": cam.width, "h": cam.height, "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "k1": k1, "k2": k2,
           "p1": p1, "p2": p2, "camera_model": "OPENCV", "frames": frames}
    if write_key:
        out["applied_transform"] = np.asarray(world_transform).tolist()
    out["ply_file_path"] = "sparse_pc.ply"
    return out


# what colmap_to_json applies (rows [0, 2, 1], last one negated) and what the dataparser assumes without the key
NS_APPLIED = np.eye(4)[:3][[0, 2, 1]] * np.array([[1.0], [1.0], [-1.0]])
NS_LEGACY = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]])


def test_ns_process_data_transforms_json_gives_colmap_cameras(tmp_path):
    """A transforms.json written as ns-process-data writes it: the COLMAP world-to-camera poses come back."""
    d = tmp_path / "scene"
    cam, ims = _colmap_scene(d)
    (d / "transforms.json").write_text(json.dumps(_ns_transforms(cam, ims, NS_APPLIED, write_key=True), indent=4))
    c = Dl3dvDataset(tmp_path).load("scene")
    want = torch.tensor(np.stack([_w2c(im) for im in ims]), dtype=torch.float32)
    torch.testing.assert_close(c.extrinsics, want, atol=1e-5, rtol=0)
    assert c.meta["world"] == "colmap" and c.meta["applied_transform"] == "file"
    # intrinsics at images_4 (24x16 of 96x64): scaled by 1/4, pixel corners -> centres
    torch.testing.assert_close(c.intrinsics[0], torch.tensor([[20.0, 0, 47 / 4 - 0.5], [0, 19.5, 33 / 4 - 0.5], [0, 0, 1]]))
    assert c.meta["distortion"] == {"k1": 0.01, "k2": -0.02, "k3": 0.0, "k4": 0.0, "p1": 0.001, "p2": 0.002}
    assert c.meta["distortion_params"] == [0.01, -0.02, 0.0, 0.0, 0.001, 0.002]


def test_missing_applied_transform_follows_nerfstudio(tmp_path):
    """No applied_transform: the older transform when colmap/sparse/0 exists, none (labelled so) otherwise."""
    d = tmp_path / "old"
    cam, ims = _colmap_scene(d, seed=1)
    # written by an ns-process-data from before the key existed: it applied NS_LEGACY and wrote no key
    (d / "transforms.json").write_text(json.dumps(_ns_transforms(cam, ims, NS_LEGACY[:, :4], write_key=False)))
    c = Dl3dvDataset(tmp_path).load("old")
    want = torch.tensor(np.stack([_w2c(im) for im in ims]), dtype=torch.float32)
    torch.testing.assert_close(c.extrinsics, want, atol=1e-5, rtol=0)
    assert c.meta["world"] == "colmap" and c.meta["applied_transform"] == "nerfstudio_colmap_default"
    # the same file without a COLMAP model: nothing to undo; the cameras stay in the file's world and say so
    import shutil

    shutil.rmtree(d / "colmap")
    c2 = Dl3dvDataset(tmp_path).load("old")
    assert c2.meta["world"] == "transforms" and c2.meta["applied_transform"] == "none"
    R = want[:, :, :3].double().numpy()
    # x_file = A x_colmap  =>  R_file = R A^T, t unchanged (A a rotation here)
    torch.testing.assert_close(c2.extrinsics[..., :3].double(), torch.tensor(R @ NS_LEGACY[:, :3].T), atol=1e-5, rtol=0)
    torch.testing.assert_close(c2.extrinsics[..., 3], want[..., 3], atol=1e-5, rtol=0)


def test_top_level_intrinsics_and_distortion_win(tmp_path):
    """nerfstudio reads a key at the top level for every frame; per-frame values only for keys absent there."""
    d = tmp_path / "s"
    cam, ims = _colmap_scene(d, n=2, seed=2)
    t = _ns_transforms(cam, ims, NS_APPLIED, write_key=True)
    t["frames"][1].update(fl_x=500.0, cx=10.0, k1=0.7)  # ignored: fl_x, cx, k1 are at the top level
    t["distortion_params"] = [0.1, 0.2, 0.3, 0.4, 0.05, 0.06]  # wins over the top-level k1..p2
    (d / "transforms.json").write_text(json.dumps(t))
    ds = Dl3dvDataset(tmp_path)
    K = ds.load("s").intrinsics
    torch.testing.assert_close(K[1], K[0])
    assert K[1, 0, 0].item() == pytest.approx(80.0 / 4) and K[1, 0, 2].item() == pytest.approx(47 / 4 - 0.5)
    m1 = ds.load("s", [1]).meta
    assert m1["distortion_params"] == [0.1, 0.2, 0.3, 0.4, 0.05, 0.06] and m1["distortion"]["k4"] == 0.4
    # nothing of k1, k2, k3, p1, p2, distortion_params at the top level (k4 alone does not fix it): per frame,
    # missing keys 0 (so the top-level k4 is not used)
    for k in ("k1", "k2", "p1", "p2", "distortion_params", "fl_x"):
        t.pop(k)
    t["k4"] = 0.9
    t["frames"][0].update(fl_x=60.0, k1=0.5, p2=0.25)
    t["frames"][1].update(fl_x=70.0, distortion_params=[1, 2, 3, 4, 5, 6])
    (d / "transforms.json").write_text(json.dumps(t))
    ds = Dl3dvDataset(tmp_path)
    assert ds.load("s").intrinsics[:, 0, 0].tolist() == [15.0, 17.5]  # per frame when absent at the top
    assert ds.load("s", [0]).meta["distortion_params"] == [0.5, 0.0, 0.0, 0.0, 0.0, 0.25]
    assert ds.load("s", [1]).meta["distortion_params"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


# ----------------------------------------------------------------------------- bad input


@pytest.fixture()
def two_scenes(tmp_path):
    c = generate_clip("walk", seed=4, num_frames=2, hw=(18, 32))
    write_dl3dv(c, tmp_path, "good", colmap=None)
    write_dl3dv(c, tmp_path, "bad", colmap="bin")
    return tmp_path


def _edit(root, fn):
    p = root / "bad" / "transforms.json"
    t = json.loads(p.read_text())
    fn(t)
    p.write_text(json.dumps(t))


@pytest.mark.parametrize(
    "edit,field,message",
    [
        (lambda t: t.__setitem__("camera_model", "OPENCV_FISHEYE"), "camera_model", "unsupported camera model"),
        (lambda t: (t.pop("camera_model"), t["frames"][1].__setitem__("camera_model", "EQUIRECTANGULAR")),
         "frames[1].camera_model", "unsupported"),
        (lambda t: t.pop("fl_x"), "fl_x' / 'frames[0].fl_x", "missing"),
        (lambda t: t.__setitem__("distortion_params", [0.1, 0.2]), "distortion_params", "shape"),
        (lambda t: t.__setitem__("k1", "big"), "k1", "finite number"),
        (lambda t: t["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")), "frames[1].transform_matrix", "non-finite"),
        (lambda t: t["frames"][0].__setitem__("transform_matrix", [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
         "frames[0].transform_matrix", "not orthonormal"),
        (lambda t: t["frames"][0].pop("file_path"), "file_path", "missing"),
        (lambda t: t.__setitem__("applied_transform", [[1, 0], [0, 1]]), "applied_transform", "shape"),
    ],
)
def test_bad_transforms_name_file_and_field(two_scenes, edit, field, message):
    _edit(two_scenes, edit)
    ds = Dl3dvDataset(two_scenes)
    with pytest.raises(DatasetError) as ei:
        ds.load("bad", [0])
    msg = str(ei.value)
    assert "bad/transforms.json" in msg and f"'{field}'" in msg and message in msg
    rep = ds.scan()
    assert rep.ok == ["good"] and list(rep.skipped) == ["bad"]


def test_bad_json_missing_and_escaping_images(two_scenes):
    (two_scenes / "bad" / "transforms.json").write_text('{"frames": [')
    with pytest.raises(DatasetError, match=r"bad/transforms.json: invalid JSON"):
        Dl3dvDataset(two_scenes).load("bad")
    write_dl3dv(generate_clip("walk", seed=4, num_frames=2, hw=(18, 32)), two_scenes, "bad", colmap=None)
    _edit(two_scenes, lambda t: t["frames"][1].__setitem__("file_path", "../../../etc/passwd"))
    with pytest.raises(DatasetError, match=r"frames\[1\]: field 'file_path': path .* escapes"):
        Dl3dvDataset(two_scenes).load("bad", [1])
    _edit(two_scenes, lambda t: t["frames"][1].__setitem__("file_path", "images/frame_00009.png"))
    with pytest.raises(DatasetError, match=r"frame_00009.png: field 'file_path': file not found"):
        Dl3dvDataset(two_scenes).load("bad", [1])
    _edit(two_scenes, lambda t: t["frames"][1].__setitem__("file_path", "images/frame_00002.png"))
    p = two_scenes / "bad" / "images_4" / "frame_00002.png"
    p.write_bytes(p.read_bytes()[:60])
    ds = Dl3dvDataset(two_scenes)
    with pytest.raises(DatasetError, match=r"frame_00002.png: field 'file_path': cannot decode"):
        ds.load("bad", [1])
    assert ds.scan().ok == ["bad", "good"]  # shallow scan reads frame 0 only
    rep = ds.scan(deep=True)
    assert rep.ok == ["good"] and "frame_00002.png" in rep.skipped["bad"]


def test_colmap_unknown_or_fisheye_model(two_scenes):
    cam_bin = two_scenes / "bad" / "colmap" / "sparse" / "0" / "cameras.bin"
    raw = bytearray(cam_bin.read_bytes())
    last = 8 + (24 + 4 * 8)  # the second (last) camera record: PINHOLE, 4 params
    struct.pack_into("<i", raw, last + 4, 4)  # -> OPENCV: 8 params, more than the file holds
    cam_bin.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"cameras.bin: field 'params': file truncated"):
        read_colmap_model(cam_bin.parent)
    struct.pack_into("<i", raw, last + 4, 99)
    cam_bin.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"cameras.bin: field 'model_id': unknown COLMAP camera model id 99"):
        read_colmap_model(cam_bin.parent)
    # a valid fisheye model is read, but refused when used as a perspective camera
    (cam_bin.parent / "cameras.bin").unlink()
    (cam_bin.parent / "cameras.txt").write_text("# c\n1 OPENCV_FISHEYE 72 128 50 50 36 64 0 0 0 0\n2 PINHOLE 72 128 50 50 36 64\n")
    ds = Dl3dvDataset(two_scenes, camera_source="colmap")
    assert ds.videos() == ["bad"]
    with pytest.raises(DatasetError, match=r"camera 1: field 'model': unsupported camera model 'OPENCV_FISHEYE'"):
        ds.load("bad")
    (cam_bin.parent / "cameras.txt").write_text("1 WEIRD 72 128 1 2 3\n")
    with pytest.raises(DatasetError, match=r"cameras.txt: line 1: field 'model': unknown COLMAP camera model 'WEIRD'"):
        read_colmap_model(cam_bin.parent)


# ----------------------------------------------------------------------------- open_dataset


def test_open_dataset_detects_each_format(tmp_path, clip):
    from vidprobe.data.co3d import Co3dDataset, write_co3d
    from vidprobe.data.native import NativeDataset
    from vidprobe.data.open import detect_format, open_dataset
    from vidprobe.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "nat", 2, num_frames=2, hw=(16, 24), progress=False)
    write_co3d([clip.select([0, 1])], tmp_path / "co3d", "things", sequence_names=["q"])
    write_dl3dv(clip.select([0, 1]), tmp_path / "dl3dv" / "2K", "h", colmap=None)
    assert isinstance(open_dataset(tmp_path / "nat"), NativeDataset)
    co = open_dataset(tmp_path / "co3d", subset=None)
    assert isinstance(co, Co3dDataset) and co.videos() == ["things/q"]
    dl = open_dataset(tmp_path / "dl3dv", window=1)
    assert isinstance(dl, Dl3dvDataset) and dl.videos() == ["2K/h"] and dl.num_frames("2K/h") == 1
    assert detect_format(tmp_path / "co3d") == "co3d"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"looked for:(.|\n)*frame_annotations.jgz(.|\n)*transforms.json"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="one DL3DV scene"):
        open_dataset(tmp_path / "dl3dv" / "2K" / "h")
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dataset.json").write_text('{"format": "something-else"}')
    with pytest.raises(DatasetError, match="dataset.json: field 'format'"):
        open_dataset(tmp_path / "other")
