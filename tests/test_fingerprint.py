"""Issue 15: features are tied to the data they came from (vidprobe.data.fingerprint).

A store extracted from one dataset must not train, evaluate or measure consistency against another dataset that
reuses its video ids: the mismatch is refused, naming the video and what differs, unless --allow-data-mismatch;
stores written before fingerprints existed are warned about once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from vidprobe.data.fingerprint import FINGERPRINT_KEY, DataMismatchError, Fingerprint, frame_hashes, read_fingerprint
from vidprobe.data.native import NativeDataset, frame_path, write_png
from vidprobe.data.sampling import FrameSampler
from vidprobe.features.extract import extract_dataset
from vidprobe.features.store import FeatureStore, key_dirname, video_filename, write_feature_file
from vidprobe.probe.data import ProbeDataset

HW, FRAMES = (16, 24), 6
SAMPLER = FrameSampler(num_frames=3, min_gap=1, max_frame=FRAMES, snap=1)


def _synthetic(root: Path, **kw) -> Path:
    from vidprobe.data.synthetic import write_synthetic_dataset

    args = dict(num_frames=FRAMES, hw=HW, seed=0, test_fraction=0.34, progress=False)
    args.update(kw)
    return write_synthetic_dataset(root, 3, **args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Dataset ``a`` with its store, and datasets with the same video ids but other frames."""
    root = tmp_path_factory.mktemp("fp")
    a = _synthetic(root / "a")
    feats = root / "feats"
    extract_dataset("pixels", a, feats, layers=[1], backbone_kwargs={"height": HW[0], "width": HW[1]}, progress=False)
    return {
        "root": root, "a": a, "feats": feats,
        "short": _synthetic(root / "short", num_frames=4, hw=(12, 20)),  # 4 frames of 12x20
        "other": _synthetic(root / "other", fov_deg=45.0),  # same ids, count and size; other pixels
    }


def _ds(store_dir, dataset_dir, **kw) -> ProbeDataset:
    return ProbeDataset(FeatureStore(store_dir), 1, None, NativeDataset(dataset_dir), "train", SAMPLER, HW, **kw)


def _invoke(args):
    from vidprobe import cli

    return CliRunner().invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "1000"})


# ------------------------------------------------------------------ what extraction records
def test_extraction_records_each_videos_fingerprint(data):
    store, ds = FeatureStore(data["feats"]), NativeDataset(data["a"])
    vid = ds.videos()[0]
    fp = read_fingerprint(store.header(vid, 1, None).metadata, "x")
    assert fp.count == FRAMES and fp.hw == HW and fp.frame_ids == tuple(range(FRAMES))
    assert fp.hashes == tuple(frame_hashes(ds.load_images(vid)))
    assert len(set(fp.hashes)) == FRAMES  # one hash per frame, and the frames differ
    assert Fingerprint.from_json(fp.to_json(), "x") == fp
    other = NativeDataset(data["other"]).load_images(vid)
    assert set(frame_hashes(other)).isdisjoint(fp.hashes)


def test_hashes_are_the_same_in_another_process(data):
    vid = NativeDataset(data["a"]).videos()[0]
    code = ("from vidprobe.data.native import NativeDataset; from vidprobe.data.fingerprint import frame_hashes;"
            f"print(','.join(frame_hashes(NativeDataset({str(data['a'])!r}).load_images({vid!r}))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1",
                            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split(",") == list(frame_hashes(NativeDataset(data["a"]).load_images(vid)))


def test_differences_name_each_field():
    fp = Fingerprint(81, tuple(range(81)), (64, 112), tuple(f"{i:016x}" for i in range(81)))
    assert fp.differences(count=49) == ["frame count 81 vs 49"]
    assert fp.differences(positions=[0, 5], frame_ids=[0, 50]) == ["frame ids 5 vs 50 (at positions 5)"]
    assert fp.differences(positions=[0], hw=(48, 64), hashes=["x"]) == ["frame size 64x112 vs 48x64"]
    assert fp.differences(positions=[0, 3, 99], hw=(64, 112), hashes=[fp.hashes[0], "x", "y"]) == [
        "content of frame(s) at positions 3 differs"]  # position 99 was never extracted: not compared
    assert fp.differences(count=81, positions=[2], frame_ids=[2], hw=(64, 112), hashes=[fp.hashes[2]]) == []


# ------------------------------------------------------------------ the check where the dataset meets the store
def test_same_ids_other_frames_are_refused_naming_video_and_difference(data):
    _ds(data["feats"], data["a"])  # its own dataset passes
    vid = NativeDataset(data["a"]).videos("train")[0]
    with pytest.raises(DataMismatchError) as e:
        _ds(data["feats"], data["short"])
    msg = str(e.value)
    assert f"video {vid!r}" in msg and "frame count 6 vs 4" in msg and "frame size 16x24 vs 12x20" in msg
    assert str(data["feats"]) in msg and "--allow-data-mismatch" in msg and "2 of 2 video(s) differ" in msg
    with pytest.raises(DataMismatchError, match=r"content of frame\(s\) at positions 0, 5 differs"):
        _ds(data["feats"], data["other"])


def test_the_override_uses_them_with_a_warning(data, caplog):
    with caplog.at_level(logging.WARNING, logger="vidprobe.data"):
        ds = _ds(data["feats"], data["other"], allow_data_mismatch=True)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("content of frame" in m and "--allow-data-mismatch" in m for m in msgs)
    s = ds.get(0, 0)
    assert s.features.shape[0] == 3


def test_each_sample_checks_the_frames_it_reads(data, tmp_path):
    """Frames 0 and 5 (checked up front) untouched, frames 1-4 replaced: the first sample read is refused."""
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(data["a"], changed)
    vid = NativeDataset(changed).videos("train")[0]
    for i in (1, 2, 3, 4):
        write_png(frame_path(changed / vid, i), torch.rand(3, *HW, generator=torch.Generator().manual_seed(i)))
    ds = _ds(data["feats"], changed)
    i = ds.videos.index(vid)
    with pytest.raises(DataMismatchError, match=rf"video {vid!r}: content of frame\(s\) at positions .* differs"):
        ds.get(i, 0)
    ds.get(1 - i, 0)  # the untouched video reads fine


def test_a_store_without_fingerprints_warns_once(data, tmp_path, caplog):
    import shutil

    from safetensors import safe_open

    old = tmp_path / "old"
    shutil.copytree(data["feats"], old)
    for p in (old / key_dirname(1, None)).iterdir():  # as written before fingerprints existed
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata())
            feats, fi = f.get_tensor("features"), f.get_tensor("frame_index")
        meta.pop(FINGERPRINT_KEY)
        write_feature_file(p, feats, fi, {k: v for k, v in meta.items() if k not in ("shape", "dtype")})
    with caplog.at_level(logging.WARNING, logger="vidprobe.data"):
        _ds(old, data["other"])  # cannot be checked: not refused
        ProbeDataset(FeatureStore(old), 1, None, NativeDataset(data["other"]), "test", SAMPLER, HW)
    warns = [r.getMessage() for r in caplog.records if "no data fingerprint" in r.getMessage()]
    assert len(warns) == 1 and str(old) in warns[0] and "cannot check" in warns[0]


def test_extraction_refuses_to_add_keys_from_other_data(data, tmp_path):
    import shutil

    store = tmp_path / "feats"
    shutil.copytree(data["feats"], store)
    s = extract_dataset("pixels", data["other"], store, layers=[-1], backbone_kwargs={"height": HW[0], "width": HW[1]},
                        progress=False)
    assert s.done == [] and len(s.skipped) == 3
    assert all("data differs from the features already stored" in r and "content of frame" in r
               for r in s.skipped.values())
    assert not any((store / key_dirname(-1, None) / video_filename(v)).exists() for v in s.skipped)


# ------------------------------------------------------------------ train, evaluate, consistency
@pytest.fixture(scope="module")
def trained(data):
    run = data["root"] / "run"
    cfg = {"features": str(data["feats"]), "dataset": str(data["a"]), "out": str(run), "probe": {"preset": "tiny"},
           "epochs": 1, "batch_size": 2, "sampler": {"num_frames": 2, "min_gap": 1, "max_frame": FRAMES, "snap": 1},
           "seed": 0}
    path = data["root"] / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _invoke(["train", path, "--no-progress"])
    assert r.exit_code == 0, r.output
    return cfg, run


def test_train_refuses_other_data_and_the_flag_overrides(data, trained, tmp_path):
    cfg, _ = trained
    cfg = dict(cfg, dataset=str(data["short"]), out=str(tmp_path / "run"))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _invoke(["train", path, "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "frame count 6 vs 4" in r.output and "frame size 16x24 vs 12x20" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)  # a message, not a traceback
    assert not (tmp_path / "run" / "checkpoints").exists()
    path.write_text(yaml.safe_dump(dict(cfg, dataset=str(data["other"]))))
    r = _invoke(["train", path, "--no-progress", "--allow-data-mismatch"])
    assert r.exit_code == 0, r.output


def test_evaluate_refuses_other_data_and_the_flag_overrides(data, trained, tmp_path):
    import shutil

    cfg, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    conf = yaml.safe_load((copy / "config.yaml").read_text())
    conf["dataset"] = str(data["other"])
    (copy / "config.yaml").write_text(yaml.safe_dump(conf))
    r = _invoke(["evaluate", copy, "--no-progress", "--save-clips", "0"])
    assert r.exit_code == 2, r.output
    vid = NativeDataset(data["a"]).videos("test")[0]
    assert f"video {vid!r}: content of frame(s) at positions 0, 5 differs" in r.output
    r = _invoke(["evaluate", copy, "--no-progress", "--save-clips", "0", "--allow-data-mismatch",
                 "--allow-failed-clips"])
    assert r.exit_code == 0, r.output


def test_consistency_refuses_other_data_and_the_flag_overrides(data):
    from vidprobe.pipeline.consistency import consistency_scores

    kw = dict(split="train", frames=2, max_frame=FRAMES, max_queries=20, pairs=1, progress=False)
    with pytest.raises(DataMismatchError, match="frame count 6 vs 4"):
        consistency_scores(data["feats"], data["short"], **kw)
    r = _invoke(["consistency", "-f", data["feats"], "-d", data["other"], "--split", "train", "--frames", "2",
                 "--max-frame", FRAMES, "--pairs", "1", "--max-queries", 20, "--no-progress"])
    assert r.exit_code == 2 and "content of frame" in r.output and "--allow-data-mismatch" in r.output, r.output
    res = consistency_scores(data["feats"], data["other"], allow_data_mismatch=True, **kw)
    assert res["videos"] == 2 and not res["failed"]
