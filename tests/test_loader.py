"""The training loader: samples stay in the store's dtype until the device, where they become fp32 and are checked
(a NaN/Inf is named exactly as the store names it); worker processes give the same batches; data wait is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidprobe.config import ConfigError
from vidprobe.data.sampling import FrameSampler
from vidprobe.features.store import (
    DTYPES,
    FeatureStore,
    FeatureStoreError,
    key_dirname,
    prepare_store,
    store_settings,
    video_filename,
    write_feature_file,
)
from vidprobe.probe.data import EvalBatches, ProbeDataset, StepBatches, batches, collate, make_loader
from vidprobe.probe.inputs import to_device
from vidprobe.probe.run_log import DataWait
from vidprobe.probe.train_config import LoaderConfig, load_config

T, HW, GRID, C = 13, (14, 21), (2, 3), 8
SAMPLER = FrameSampler(num_frames=3, min_gap=2, max_frame=T, snap=2)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("loader") / "data"
    write_synthetic_dataset(root, 5, num_frames=T, hw=HW, seed=0, test_fraction=0.4, progress=False)
    return root


def write_store(root: Path, data: Path, dtype: str) -> Path:
    """Random features of every video of ``data``: two frames per map (frame f -> map (f + 1) // 2)."""
    from vidprobe.data.open import open_dataset

    prepare_store(root, store_settings("test", dtype=dtype), [(1, None)])
    fi = (torch.arange(T) + 1) // 2
    g = torch.Generator().manual_seed(0)
    for v in open_dataset(data).videos(None):
        write_feature_file(root / key_dirname(1, None) / video_filename(v), torch.randn(int(fi.max()) + 1, *GRID, C,
                           generator=g), fi, {"video_id": v}, dtype)
    return root


def dataset(store_root: Path, data: Path, split: str = "train") -> ProbeDataset:
    from vidprobe.data.open import open_dataset

    return ProbeDataset(FeatureStore(store_root), 1, None, open_dataset(data), split, SAMPLER, HW, seed=5)


def poison(path: Path, map_id: int) -> None:
    """An fp16 NaN over the first element of feature map ``map_id`` of a feature file, in place."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    info = json.loads(raw[8 : 8 + n])["features"]
    assert info["dtype"] == "F16"
    per_map = 2 * GRID[0] * GRID[1] * C
    at = 8 + n + info["data_offsets"][0] + map_id * per_map
    raw[at : at + 2] = (0x7E00).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_samples_stay_in_stored_dtype_and_device_gives_the_store_fp32(data, tmp_path, dtype):
    root = write_store(tmp_path / "feats", data, dtype)
    ds = dataset(root, data)
    assert ds.get(0, 0).features.dtype == DTYPES[dtype]
    loader = make_loader(ds, StepBatches(len(ds), 2, 2, 5, 0, 2), LoaderConfig(workers=0), CPU)
    ref = FeatureStore(root)  # the store's own fp32 decode, as samples were converted before
    n = 0
    for cpu_batch in batches(loader):
        assert cpu_batch["features"].dtype == DTYPES[dtype]
        batch = to_device(cpu_batch, CPU)
        assert batch["features"].dtype == torch.float32
        for b, (vid, frames) in enumerate(zip(batch["videos"], batch["frames"])):
            assert torch.equal(batch["features"][b], ref.read(vid, 1, None, frames))
            n += 1
    assert n == 4


def test_nonfinite_feature_is_named_as_the_store_names_it(data, tmp_path):
    root = write_store(tmp_path / "feats", data, "fp16")
    ds = dataset(root, data)
    i = 1
    frames = ds.frames_for(i, 0)
    map_id = int((torch.tensor(frames[-1]) + 1) // 2)
    path = ds.store.path(ds.videos[i], 1, None)
    poison(path, map_id)
    with pytest.raises(FeatureStoreError) as store_err:  # the store's CPU check, as samples were checked before
        FeatureStore(root).read(ds.videos[i], 1, None, frames)
    assert ds.get(i, 0).features.isnan().any()  # the sample itself is no longer checked on the CPU...
    with pytest.raises(FeatureStoreError) as dev_err:  # ...its batch is, on the device, naming the second sample
        to_device(collate([ds.get(0, 0), ds.get(i, 0)]), CPU)
    assert str(dev_err.value) == str(store_err.value)
    assert str(path) in str(dev_err.value) and f"[{map_id}]" in str(dev_err.value)
    # the same through worker processes
    loader = make_loader(ds, [[(0, 0), (i, 0)]], LoaderConfig(workers=1), CPU)
    with pytest.raises(FeatureStoreError) as w_err:
        for b in batches(loader):
            to_device(b, CPU)
    assert str(w_err.value) == str(store_err.value)


def test_workers_give_the_same_batches_as_the_training_process(data, tmp_path):
    root = write_store(tmp_path / "feats", data, "fp16")
    ds = dataset(root, data)
    keys = StepBatches(len(ds), 2, 2, 5, 0, 5)  # 2.5 epochs of 2 steps, 2 clips a step
    assert list(StepBatches(len(ds), 2, 2, 5, 3, 5)) == list(keys)[3:]  # a resumed run draws the same batches
    assert len({tuple(k) for k in keys}) > 1
    runs = {}
    for w in (0, 2):
        cfg = LoaderConfig(workers=w, prefetch_factor=1)
        runs[w] = list(batches(make_loader(ds, keys, cfg, CPU)))
        runs[f"eval{w}"] = list(batches(make_loader(ds, EvalBatches(len(ds), 2), LoaderConfig(workers=min(w, 1)), CPU)))
    for a, b in ((runs[0], runs[2]), (runs["eval0"], runs["eval2"])):
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x["videos"] == y["videos"] and x["frames"] == y["frames"] and x["maps"] == y["maps"]
            assert torch.equal(x["features"], y["features"])
            assert all(torch.equal(x["gt"][k], y["gt"][k]) for k in x["gt"])
    assert [b["frames"] for b in runs[0]] == [[ds.frames_for(i, e) for i, e in k] for k in keys]


def test_a_worker_error_keeps_its_type_and_message(data, tmp_path):
    root = write_store(tmp_path / "feats", data, "fp16")
    ds = dataset(root, data)
    gone = ds.store.path(ds.videos[1], 1, None)
    gone.unlink()
    with pytest.raises(FeatureStoreError, match="no such feature file") as e:
        list(batches(make_loader(ds, [[(0, 0)], [(1, 0)]], LoaderConfig(workers=1), CPU)))
    assert str(gone) in str(e.value) and "Traceback" not in str(e.value)


def test_data_wait_fraction_is_logged(data, tmp_path):
    from vidprobe.probe.train import train

    root = write_store(tmp_path / "feats", data, "fp16")
    out = tmp_path / "run"
    cfg = load_config(None, base={"features": str(root), "dataset": str(data), "out": str(out), "epochs": 1,
                                  "batch_size": 1, "probe": {"preset": "tiny"}, "sampler": {"num_frames": 3,
                                  "min_gap": 2, "max_frame": T, "snap": 2}, "loader": {"workers": 1}})
    res = train(cfg, progress=False)
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == res.steps == 3
    assert all(r["data_wait"] >= 0 for r in steps)
    (summary,) = [r for r in rows if r.get("event") == "train_summary"]
    assert summary["timed_steps"] == res.steps - 1
    assert 0 <= summary["data_wait_fraction"] <= 1 and summary["data_wait_fraction"] == res.data_wait_fraction
    assert summary["data_wait_s"] == pytest.approx(sum(r["data_wait"] for r in steps[1:]), abs=1e-4)
    assert json.loads((out / "run.json").read_text())["loader"]["workers"] == 1


def test_data_wait_counts_blocked_time_after_the_first_step():
    w = DataWait()
    assert w.fraction is None
    w.add(5.0, 6.0)  # the first step: worker start-up and the prefetch fill, kept apart
    w.add(0.5, 2.0)
    w.add(0.0, 2.0)
    assert w.fraction == pytest.approx(0.125) and w.first_wait_s == 5.0
    assert w.summary(3)["timed_steps"] == 2


def test_loader_settings_are_checked(data, tmp_path):
    base = {"features": str(tmp_path), "dataset": str(data)}
    for bad, where in (({"workers": -1}, "loader.workers"), ({"prefetch_factor": 0}, "loader.prefetch_factor")):
        with pytest.raises(ConfigError, match=where):
            load_config(None, base={**base, "loader": bad})
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        load_config(None, base={**base, "loader": {"worker": 2}})
    assert LoaderConfig().num_workers() >= 0 and LoaderConfig(workers=0).num_workers() == 0
