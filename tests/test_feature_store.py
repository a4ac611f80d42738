"""FeatureStore: layout, round trips, partial reads, atomic writes, manifest checks, corrupt files."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from vidprobe.features import store as st
from vidprobe.features.store import (
    FeatureStore,
    FeatureStoreError,
    key_dirname,
    prepare_store,
    store_settings,
    video_filename,
    write_feature_file,
)

N, H, W, C, T = 21, 3, 5, 8, 81  # WAN-like layout, tiny maps


def wan_index(T: int = T) -> torch.Tensor:
    t = torch.arange(T)
    return torch.where(t == 0, 0, (t - 1) // 4 + 1)


def make_store(root, dtype="fp16", keys=((20, 749),), **kw):
    prepare_store(root, store_settings("tiny", model_id="org/tiny", dtype=dtype, input_hw=(24, 40), frame_layout="vae4x", **kw), keys)


def feats(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, H, W, C, generator=g) * 3


def write(root, video="seq/a", layer=20, t=749, f=None, dtype="fp16", fi=None):
    f = feats() if f is None else f
    fi = wan_index() if fi is None else fi
    path = root / key_dirname(layer, t) / video_filename(video)
    write_feature_file(path, f, fi, {"video_id": video, "layer": str(layer), "timestep": str(t), "source": "test"}, dtype)
    return path, f, fi


# ---------------------------------------------------------------- layout and round trip


def test_layout_names_and_manifest(tmp_path):
    make_store(tmp_path, keys=[(20, 749), (10, 249), (3, None)])
    path, _, _ = write(tmp_path, video="apple/110_13051")
    assert path == tmp_path / "L020_T749" / "apple__110_13051.safetensors"
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["settings"]["backbone"] == "tiny" and m["settings"]["dtype"] == "fp16"
    assert m["settings"]["input_hw"] == [24, 40] and m["settings"]["frame_layout"] == "vae4x"
    assert m["vidprobe_version"]
    keys = {(k["layer"], k["timestep"]): k for k in m["keys"]}
    assert keys[(20, 749)]["tau"] == pytest.approx(0.251) and keys[(10, 249)]["tau"] == pytest.approx(0.751)
    assert keys[(3, None)]["tau"] is None and keys[(3, None)]["dir"] == "L003_Tnone"
    s = FeatureStore(tmp_path)
    assert s.keys() == [(3, None), (10, 249), (20, 749)]
    assert s.videos(20, 749) == ["apple/110_13051"] and s.videos(10, 249) == []


@pytest.mark.parametrize("bad", ["", "a__b", ".hidden", "a/.b", "a\\b", "/abs", "a//b"])
def test_bad_video_ids_refused(tmp_path, bad):
    with pytest.raises(FeatureStoreError, match="video id"):
        video_filename(bad)


@pytest.mark.parametrize("backend", ["pread", "mmap"])
@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_round_trip_partial_read(tmp_path, backend, dtype, torch_dtype):
    make_store(tmp_path, dtype=dtype)
    _, f, fi = write(tmp_path, dtype=dtype)
    s = FeatureStore(tmp_path, backend=backend)
    frames = [0, 13, 5, 80, 14]  # 13 and 14 share map 4; unsorted on purpose
    want = f.to(torch_dtype)[fi[frames]]
    got = s.read("seq/a", 20, 749, frames)
    assert got.dtype == torch.float32 and got.shape == (5, H, W, C)
    assert torch.equal(got, want.float())
    raw, maps = s.read("seq/a", 20, 749, frames, dtype=None, return_maps=True)
    assert raw.dtype == torch_dtype and torch.equal(raw, want)
    assert maps.tolist() == fi[frames].tolist()
    assert torch.equal(s.frame_index("seq/a", 20, 749), fi)
    assert torch.equal(s.read("seq/a", 20, 749, None, dtype=None), f.to(torch_dtype)[fi])
    if dtype == "fp32":
        assert torch.equal(got, f[fi[frames]])


def test_store_pickles_for_dataloader_workers(tmp_path):
    import pickle

    make_store(tmp_path)
    _, f, fi = write(tmp_path)
    s = FeatureStore(tmp_path)
    s.read("seq/a", 20, 749, [0])
    s2 = pickle.loads(pickle.dumps(s))
    assert torch.equal(s2.read("seq/a", 20, 749, [9]), f.half()[fi[[9]]].float())


def test_info_and_channels(tmp_path):
    make_store(tmp_path, keys=[(20, 749), (10, 249)])
    p1, _, _ = write(tmp_path, "v1")
    p2, _, _ = write(tmp_path, "v2")
    s = FeatureStore(tmp_path)
    info = {(k["layer"], k["timestep"]): k for k in s.info()["keys"]}
    assert info[(20, 749)]["videos"] == 2 and info[(20, 749)]["shape"] == [N, H, W, C]
    assert info[(20, 749)]["channels"] == C == s.channels(20, 749)
    assert info[(20, 749)]["bytes"] == p1.stat().st_size + p2.stat().st_size
    assert info[(10, 249)]["videos"] == 0 and info[(10, 249)]["channels"] is None
    assert s.info()["settings"]["model_id"] == "org/tiny"


# ---------------------------------------------------------------- partial reads touch only the needed maps


def test_partial_read_counts_only_needed_bytes(tmp_path, monkeypatch):
    make_store(tmp_path)
    path, f, fi = write(tmp_path)
    asked = []
    real = os.preadv

    def counting(fd, bufs, offset):
        k = real(fd, bufs, offset)
        asked.append((offset, k))
        return k

    monkeypatch.setattr("vidprobe.features.byte_ranges._pread", counting)  # the reader's one pread
    s = FeatureStore(tmp_path)
    per_map = H * W * C * 2
    frames = [0, 21, 41, 61]  # the reference sampler: frame 0 + 3 frames at 1+4k -> 4 distinct maps
    s.read("seq/a", 20, 749, frames)
    header = s.header("seq/a", 20, 749)
    feat_bytes = sum(k for off, k in asked if header.features.start <= off < header.features.end)
    assert feat_bytes == 4 * per_map
    total = sum(k for _, k in asked)
    assert total == 4 * per_map + header.header_bytes + 8 * T
    assert feat_bytes * N == 4 * (header.features.end - header.features.start)  # 4 of 21 maps
    # maps shared by several frames are read once; the header is cached
    asked.clear()
    s.read("seq/a", 20, 749, [1, 2, 3, 4])  # all served by map 1
    assert sum(k for _, k in asked) == per_map
    assert s.bytes_read == total + per_map


@pytest.mark.parametrize("backend", ["pread", "mmap"])
def test_partial_read_ignores_corruption_in_unused_maps(tmp_path, backend):
    """Poison map 7 with NaN bytes: reads that do not need it are unaffected; a read that does fails."""
    make_store(tmp_path)
    path, f, fi = write(tmp_path)
    hdr = FeatureStore(tmp_path).header("seq/a", 20, 749)
    per_map = H * W * C * 2
    with open(path, "r+b") as fh:
        fh.seek(hdr.features.start + 7 * per_map)
        fh.write(b"\xff" * per_map)  # 0xFFFF is a NaN in fp16
    s = FeatureStore(tmp_path, backend=backend)
    frames = [0, 5, 9, 40]  # maps 0, 2, 3, 10
    assert torch.equal(s.read("seq/a", 20, 749, frames), f.half()[fi[frames]].float())
    with pytest.raises(FeatureStoreError, match=r"NaN/Inf.*map\(s\) \[7\]") as e:
        s.read("seq/a", 20, 749, [0, 25])  # frame 25 -> map 7
    assert str(path) in str(e.value)


# ---------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    make_store(tmp_path)
    path, f_old, fi = write(tmp_path)
    before = path.read_bytes()

    def disk_full(fh, data):
        fh.write(bytes(memoryview(data)[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vidprobe.atomic.write_all", disk_full)  # the one atomic writer's write
    with pytest.raises(OSError, match="No space"):
        write(tmp_path, f=feats(seed=1))
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp file left behind
    monkeypatch.undo()
    s = FeatureStore(tmp_path)
    assert torch.equal(s.read("seq/a", 20, 749, [0, 80]), f_old.half()[fi[[0, 80]]].float())
    write(tmp_path, f=feats(seed=1))  # a later good write replaces it
    assert torch.equal(FeatureStore(tmp_path).read("seq/a", 20, 749, [0]), feats(seed=1).half()[:1].float())


def test_failed_replace_leaves_no_partial_file(tmp_path, monkeypatch):
    make_store(tmp_path)
    target = tmp_path / "L020_T749" / "new.safetensors"

    def boom(*a, **k):
        raise KeyboardInterrupt  # killed between fsync and rename

    monkeypatch.setattr(st.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, video="new")
    monkeypatch.undo()
    assert not target.exists() and os.listdir(target.parent) == []


def test_writer_refuses_bad_features(tmp_path):
    make_store(tmp_path)
    bad = feats()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(FeatureStoreError, match="NaN"):
        write(tmp_path, f=bad)
    with pytest.raises(FeatureStoreError, match="overflow in fp16"):
        write(tmp_path, f=feats() * 1e5)
    with pytest.raises(FeatureStoreError, match="frame_index points outside"):
        write(tmp_path, fi=wan_index() + 1)
    assert os.listdir(tmp_path / "L020_T749") == []
    write(tmp_path, f=feats() * 1e5, dtype="bf16")  # bf16 has the range


# ---------------------------------------------------------------- manifest


def test_manifest_mismatch_refused_naming_fields(tmp_path):
    make_store(tmp_path)
    with pytest.raises(FeatureStoreError) as e:
        prepare_store(tmp_path, store_settings("other", model_id="org/other", dtype="bf16", input_hw=(24, 40), frame_layout="vae4x"), [(20, 749)])
    msg = str(e.value)
    assert "manifest.json" in msg and "backbone" in msg and "model_id" in msg and "dtype" in msg
    assert "input_hw" not in msg and "frame_layout" not in msg
    with pytest.raises(FeatureStoreError, match="backbone_kwargs"):
        make_store(tmp_path, backbone_kwargs={"tiny": True})
    # same settings: new keys are merged; a device change does not alter the features
    make_store(tmp_path, keys=[(10, 249)], backbone_kwargs={"device": "cuda"})
    assert FeatureStore(tmp_path).keys() == [(10, 249), (20, 749)]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_not_a_store(tmp_path):
    with pytest.raises(FeatureStoreError, match="no manifest"):
        FeatureStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(FeatureStoreError, match="unreadable manifest"):
        FeatureStore(tmp_path)


# ---------------------------------------------------------------- corrupt files name the file


def _raw(path, tensors, meta=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta or {})


@pytest.mark.parametrize(
    "case,match",
    [
        ("truncated", "truncated"),
        ("empty", "empty file"),
        ("garbage", "header length"),
        ("missing_features", "missing tensor 'features'"),
        ("missing_index", "missing tensor 'frame_index'"),
        ("int_features", "expected a float type"),
        ("fp32_in_fp16_store", "manifest says fp16"),
        ("float_index", "'frame_index' must be int64"),
        ("index_past_end", "frame_index points past the end: frame 80 -> map 21"),
        ("nan", r"NaN/Inf in tensor 'features' at map\(s\) \[0\]"),
        ("inf", "NaN/Inf"),
        ("three_d", r"must be \[N,h,w,C\]"),
    ],
)
def test_corrupt_files_raise_naming_the_file(tmp_path, case, match):
    make_store(tmp_path)
    path = tmp_path / "L020_T749" / "bad.safetensors"
    f, fi = feats().half(), wan_index()
    if case in ("truncated", "empty", "garbage"):
        write(tmp_path, video="bad")
        data = path.read_bytes()
        path.write_bytes({"truncated": data[:-100], "empty": b"", "garbage": b"\x00" * 7 + b"\xff" * 40}[case])
    elif case == "missing_features":
        _raw(path, {"frame_index": fi})
    elif case == "missing_index":
        _raw(path, {"features": f})
    elif case == "int_features":
        _raw(path, {"features": f.to(torch.int16), "frame_index": fi})
    elif case == "fp32_in_fp16_store":
        _raw(path, {"features": f.float(), "frame_index": fi})
    elif case == "float_index":
        _raw(path, {"features": f, "frame_index": fi.float()})
    elif case == "index_past_end":
        fi2 = fi.clone()
        fi2[80] = N
        _raw(path, {"features": f, "frame_index": fi2})
    elif case in ("nan", "inf"):
        f[0, 1, 2, 3] = float("nan") if case == "nan" else float("inf")
        _raw(path, {"features": f, "frame_index": fi})
    elif case == "three_d":
        _raw(path, {"features": f[:, 0].contiguous(), "frame_index": fi})
    s = FeatureStore(tmp_path)
    with pytest.raises(FeatureStoreError, match=match) as e:
        s.read("bad", 20, 749, [0, 80])
    assert str(path) in str(e.value)
    assert not s.is_valid("bad", 20, 749, full=True)


def test_frames_out_of_range_and_missing_file(tmp_path):
    make_store(tmp_path)
    path, _, _ = write(tmp_path)
    s = FeatureStore(tmp_path)
    with pytest.raises(FeatureStoreError, match=r"frame\(s\) \[81\] out of range: the video has 81 frames") as e:
        s.read("seq/a", 20, 749, [0, 81])
    assert str(path) in str(e.value)
    with pytest.raises(FeatureStoreError, match="no such feature file"):
        s.read("seq/b", 20, 749, [0])


def test_replaced_file_is_not_served_from_cache(tmp_path):
    make_store(tmp_path)
    write(tmp_path, f=feats(0))
    s = FeatureStore(tmp_path)
    a = s.read("seq/a", 20, 749, [0])
    write(tmp_path, f=feats(5, n=30), fi=torch.arange(T) % 30)
    b = s.read("seq/a", 20, 749, [40])
    assert torch.equal(a, feats(0).half()[:1].float())
    assert torch.equal(b, feats(5, n=30).half()[10:11].float())
