"""3D experts: Fast3R and VGGT backbones (own compact implementations) and the VGGT labeler.

Tiny random configs on CPU; the full-size models are only built on the meta
device to compare their parameter names/shapes with fixtures enumerated from
the upstream module definitions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vidprobe.backbones import fast3r, vggt
from vidprobe.backbones.base import registry
from vidprobe.backbones.vit3d import load_into, param_shapes
from vidprobe.geometry import decode_pose, depth_to_world_points, encode_pose

FIXTURES = Path(__file__).parent / "fixtures"


def _video(T=4, H=60, W=110, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, 3, H, W, generator=g)


# ------------------------------------------------------------ key contracts
@pytest.mark.parametrize("cls,cfg,fixture", [
    (vggt.VGGTModel, vggt.FULL, "vggt_keys.json"),
    (fast3r.Fast3RNet, fast3r.FULL, "fast3r_keys.json"),
])
def test_full_size_keys_match_official_checkpoint_fixture(cls, cfg, fixture):
    doc = json.loads((FIXTURES / fixture).read_text())
    with torch.device("meta"):
        model = cls(cfg)
    got = param_shapes(model)
    want = doc["tensors"]
    assert sorted(set(want) - set(got)) == []
    assert sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    assert sum(math.prod(s) for s in got.values()) == doc["num_params"]


def test_vggt_1b_size_is_about_one_billion():
    doc = json.loads((FIXTURES / "vggt_keys.json").read_text())
    assert 1.1e9 < doc["num_params"] < 1.3e9  # VGGT-1B without its tracking head


@pytest.mark.parametrize("mod,drop", [(vggt, "track_head.feature_extractor.norm.weight"),
                                      (fast3r, "downstream_head.dpt.head.0.weight")])
@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_state_dict_with_official_names_round_trips_strictly(tmp_path, mod, drop, fmt):
    src = mod.build_model(tiny=True, seed=1)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd[drop] = torch.zeros(3)  # a head vidprobe does not run: dropped on load
    if fmt == "safetensors":
        save_file(sd, str(tmp_path / "model.safetensors"))
    else:
        torch.save(sd, tmp_path / "model.pt")
    dst = mod.build_model(str(tmp_path), config=mod.TINY, seed=2)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # a missing tensor or a wrong shape is refused, naming the key
    bad = dict(sd)
    key = next(iter(src.state_dict()))
    bad.pop(key)
    with pytest.raises(ValueError, match="missing"):
        load_into(mod.build_model(tiny=True), bad, mod.DROPPED_PREFIXES)
    bad = dict(sd)
    bad[key] = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_into(mod.build_model(tiny=True), bad, mod.DROPPED_PREFIXES)


# ------------------------------------------------------------------ VGGT
def test_vggt_preprocess_matches_crop_mode():
    assert vggt.vggt_input_hw((540, 960)) == ((294, 518), 294)  # 960x540 -> 518x294
    assert vggt.vggt_input_hw((1000, 500)) == ((1036, 518), 518)  # tall: centre crop to 518 rows
    x = vggt.preprocess(torch.rand(2, 3, 1000, 500))
    assert x.shape == (2, 3, 518, 518) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_vggt_backbone_shapes_and_frame_index():
    spec, factory = registry()["vggt-1b"]
    assert spec.input_hw == (294, 518) and spec.num_layers == 24
    bb = factory(tiny=True)
    fs = bb.extract(_video(T=5), layers=[2, -1])
    # tiny: width 56, height round(60*56/110/14)*14 = 28 -> grid 2x4, C = 2*32
    assert fs.maps[(2, None)].shape == (5, 2, 4, 64)
    assert fs.maps[(-1, None)].shape == (5, 2, 4, 64)
    assert fs.frame_index.tolist() == [0, 1, 2, 3, 4]


def test_vggt_early_stopped_features_equal_full_pass():
    bb = vggt.build(registry()["vggt-1b"][0], tiny=True)
    video = _video()
    calls = []
    h = bb.model.aggregator.frame_blocks[2].register_forward_hook(lambda *a: calls.append(1))
    fs = bb.extract(video, layers=[2])
    h.remove()
    assert calls == []  # blocks after the deepest requested one never ran
    with torch.no_grad():
        full = bb.model.aggregator(vggt.preprocess(video, 56)[None])
    assert len(full) == 4
    ps = bb.model.aggregator.patch_start_idx
    want = full[1][0, :, ps:].reshape(4, 2, 4, 64)
    torch.testing.assert_close(fs.maps[(2, None)], want)
    # frame || global halves are the two attention types of the same block
    torch.testing.assert_close(bb.extract(video, layers=[-1]).maps[(-1, None)], full[3][0, :, ps:].reshape(4, 2, 4, 64))


def test_vggt_first_frame_uses_its_own_special_tokens():
    model = vggt.build_model(tiny=True)
    with torch.no_grad():
        model.aggregator.camera_token[:, 0] += 1.0  # perturb only the first-frame set
        a = model.aggregator(vggt.preprocess(_video(T=3), 56)[None], stop_after=1)[0]
        model.aggregator.camera_token[:, 0] -= 1.0
        b = model.aggregator(vggt.preprocess(_video(T=3), 56)[None], stop_after=1)[0]
    frame_half = slice(0, 32)
    assert not torch.allclose(a[0, 0, :, frame_half], b[0, 0, :, frame_half])
    torch.testing.assert_close(a[0, 1:, :, frame_half], b[0, 1:, :, frame_half])  # frame attention is per frame


def test_pose_encoding_convention_is_vggts():
    # VGGT: [t (extrinsic translation), quaternion scalar-last xyzw, fov_h, fov_w], principal point at the centre
    th = 0.3
    enc = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, math.sin(th / 2), math.cos(th / 2), 0.8, 1.2]], dtype=torch.float64)
    E, K = decode_pose(enc, (20, 40))
    Rz = torch.tensor([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(E[0, :, :3], Rz)
    torch.testing.assert_close(E[0, :, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert K[0, 1, 1] == pytest.approx(10 / math.tan(0.4)) and K[0, 0, 0] == pytest.approx(20 / math.tan(0.6))
    assert (K[0, 0, 2], K[0, 1, 2]) == (20, 10)


@pytest.mark.parametrize("points_from", ["depth", "point_head"])
def test_vggt_labeler_outputs_are_consistent(points_from):
    lab = vggt.build_labeler(tiny=True, device="cpu", points_from=points_from)
    video = _video(T=3)
    out = lab(video)
    T, H, W = out["depth"].shape
    assert (T, H, W) == (3, 28, 56)
    assert out["points"].shape == (3, 28, 56, 3) and out["intrinsics"].shape == (3, 3, 3)
    assert bool((out["confidence"] >= 1).all()) and bool(out["valid"].all())
    with torch.no_grad():
        pred = lab.model(vggt.preprocess(video, 56)[None])
    pose = pred["pose_enc"][0].clone()
    pose[:, 7:] = pose[:, 7:].clamp(1e-4, math.pi - 1e-4)
    q = pose[:, 3:7] / pose[:, 3:7].norm(dim=-1, keepdim=True)  # the head's raw quaternion, as a unit, w >= 0
    pose[:, 3:7] = torch.where(q[:, 3:] < 0, -q, q)
    torch.testing.assert_close(encode_pose(out["extrinsics"].double(), out["intrinsics"].double(), (H, W)).float(),
                               pose, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["depth"], pred["depth"][0, ..., 0])
    torch.testing.assert_close(out["confidence"], pred["depth_conf"][0])
    if points_from == "depth":
        want = depth_to_world_points(out["depth"].double(), out["intrinsics"].double(), out["extrinsics"].double())
        torch.testing.assert_close(out["points"].double(), want, atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(out["points"], pred["world_points"][0])


# ----------------------------------------------------------------- Fast3R
def test_fast3r_input_size_and_reference_grid():
    assert fast3r.input_hw((540, 960)) == (288, 512)  # the reference's 512x288 -> 18x32 tokens
    spec = registry()["fast3r"][0]
    assert spec.input_hw == (288, 512) and spec.num_layers == 24 and spec.default_layer == -1


def test_fast3r_shapes_frame_index_and_reference_index():
    bb = fast3r.build(registry()["fast3r"][0], tiny=True)
    video = _video(T=4, H=72, W=128)
    fs = bb.extract(video, layers=[1, -1])
    assert fs.maps[(1, None)].shape == (4, 2, 4, 32)  # 128x72 -> 64x32 -> 2x4 tokens
    assert fs.frame_index.tolist() == [0, 1, 2, 3]
    x = bb.preprocess(video)
    with torch.no_grad():
        ref = bb.model.reference_outputs(x, seed=bb.seed)
    assert len(ref) == bb.model.cfg.dec_depth + 1
    # layer -1 is the reference's last index (dec_norm of the last fusion block); layer 1 is block 1's raw output
    torch.testing.assert_close(fs.maps[(-1, None)], ref[-1].reshape(4, 2, 4, 32))
    torch.testing.assert_close(fs.maps[(1, None)], ref[1].reshape(4, 2, 4, 32))


def test_fast3r_early_stop_equals_full_pass_and_is_seeded():
    bb = fast3r.build(registry()["fast3r"][0], tiny=True)
    video = _video(T=3, H=72, W=128)
    calls = []
    h = bb.model.decoder.dec_blocks[2].register_forward_hook(lambda *a: calls.append(1))
    early = bb.extract(video, layers=[2]).maps[(2, None)]
    h.remove()
    assert calls == []
    full = bb.extract(video, layers=[2, 3]).maps[(2, None)]
    torch.testing.assert_close(early, full)
    # random image-index embedding: reproducible for a seed, different for another seed
    torch.testing.assert_close(bb.extract(video, layers=[2]).maps[(2, None)], early)
    other = fast3r.Fast3RBackbone(bb.spec, bb.model, bb.device, bb.dtype, None, seed=7)
    assert not torch.allclose(other.extract(video, layers=[2]).maps[(2, None)], early)


def test_fast3r_image_ids():
    dec = fast3r.build_model(tiny=True).decoder
    ids = dec.image_ids(50, torch.Generator().manual_seed(0))
    assert ids[0] == 0 and len(set(ids.tolist())) == 50 and int(ids[1:].min()) >= 1 and int(ids.max()) <= 999
    with pytest.raises(ValueError, match="at most"):
        dec.image_ids(1001, None)


def test_fast3r_index_embedding_table():
    t = fast3r.sincos_1d(8, 3)
    assert t.shape == (3, 8)
    torch.testing.assert_close(t[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(t[2, 0], torch.tensor(math.sin(2.0)))  # omega_0 = 1
    torch.testing.assert_close(t[2, 5], torch.tensor(math.cos(2.0 / 10)))  # omega_i = 10000^(-i/(D/2)): omega_1 = 0.1


# ------------------------------------------------------------ label command
class _TinyDataset:
    """A minimal in-memory VideoDataset: video 'broken' fails to load."""

    def __init__(self):
        self.data = {"a": _video(T=7, H=30, W=55, seed=1), "cat/b": _video(T=3, H=30, W=55, seed=2)}
        self.loads: list[str] = []

    def videos(self, split=None):
        return ["a", "broken", "cat/b"]

    def num_frames(self, vid):
        return 5 if vid == "broken" else self.data[vid].shape[0]

    def load_images(self, vid, frames=None):
        self.loads.append(vid)
        if vid == "broken":
            raise OSError("frame 0: truncated PNG")
        v = self.data[vid]
        return v if frames is None else v[list(frames)]


def test_label_dataset_writes_readable_files_resumes_and_counts_broken(tmp_path):
    from vidprobe.data.labels import LabelsFile
    from vidprobe.labels_cli import label_dataset, labels_path

    ds = _TinyDataset()
    lab = vggt.build_labeler(tiny=True, device="cpu", points_from="depth")
    s = label_dataset(ds, tmp_path, lab, window=5, progress=False, meta=lab.meta())
    assert sorted(s.labelled) == ["a", "cat/b"] and list(s.failed) == ["broken"]
    assert "truncated PNG" in s.failed["broken"]
    lf = LabelsFile(labels_path(tmp_path, "a"))
    assert lf.num_frames == 5 and lf.hw == (28, 56)  # window of 5 of 7 frames, VGGT resolution
    r = lf.read()
    assert r["frame_ids"].tolist() == [0, 1, 2, 3, 4]
    want = depth_to_world_points(r["depth"].double(), r["intrinsics"].double(), r["extrinsics"].double())
    torch.testing.assert_close(r["points"].double(), want, atol=1e-4, rtol=1e-4)
    assert lf.meta["labeler"] == "vggt" and lf.meta["video_id"] == "a"
    assert (tmp_path / "cat" / "b.safetensors").is_file()
    assert LabelsFile(tmp_path / "cat" / "b.safetensors").num_frames == 3

    ds.loads.clear()
    s2 = label_dataset(ds, tmp_path, lab, window=5, progress=False)
    assert sorted(s2.skipped_existing) == ["a", "cat/b"] and s2.labelled == [] and list(s2.failed) == ["broken"]
    assert ds.loads == ["broken"]  # done videos are not read again

    (tmp_path / "a.safetensors").write_bytes(b"garbage")  # a corrupt file is redone
    s3 = label_dataset(ds, tmp_path, lab, window=5, progress=False)
    assert s3.labelled == ["a"]


def test_labels_path_refuses_escaping_ids(tmp_path):
    from vidprobe.labels_cli import labels_path

    assert labels_path(tmp_path, "cat/seq") == tmp_path / "cat" / "seq.safetensors"
    for bad in ("../x", "/abs", ""):
        with pytest.raises(ValueError):
            labels_path(tmp_path, bad)


def test_label_cli_on_native_dataset(tmp_path):
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app
    from vidprobe.data.labels import LabelsFile
    from vidprobe.data.native import NativeDataset
    from vidprobe.data.synthetic import write_synthetic_dataset

    _load()
    root = write_synthetic_dataset(tmp_path / "ds", 2, num_frames=4, hw=(32, 56))
    ids = sorted(NativeDataset(root).videos())
    out = tmp_path / "labels"
    res = CliRunner().invoke(app, ["label", str(root), "--out", str(out), "--tiny", "--window", "3", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    assert "labelled 2" in res.output
    for vid in ids:
        assert LabelsFile(out / f"{vid}.safetensors").num_frames == 3
    # default points: the depth unprojected with the predicted cameras (the release's stored pointmaps)
    lf = LabelsFile(out / f"{ids[0]}.safetensors")
    assert lf.meta["points_from"] == "depth"
    r = lf.read()
    want = depth_to_world_points(r["depth"].double(), r["intrinsics"].double(), r["extrinsics"].double())
    torch.testing.assert_close(r["points"].double(), want, atol=1e-4, rtol=1e-4)
    summary = json.loads((out / "label_summary.json").read_text())
    assert sorted(summary["labelled"]) == ids and summary["failed"] == {}
    res = CliRunner().invoke(app, ["label", str(root), "--out", str(out), "--tiny", "--device", "cpu", "-q"])
    assert res.exit_code == 0 and "already done 2" in res.output
    res = CliRunner().invoke(app, ["label", str(root), "--out", str(out), "--labeler", "nope", "--tiny"])
    assert res.exit_code != 0
