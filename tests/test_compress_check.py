"""`vidprobe compress-check` (issue 14): the probe on uncompressed and compressed oracle features with the same seeds.

End to end at a tiny scale (the oracle control, a 1-block probe, a few steps): bytes and ratio, a verdict per
metric, runs reused on a rerun, and an identity codec (a decoded copy) giving a zero change on every metric. A
destructive codec is not asserted end to end: after the few steps a test can afford the probe has not learned what
``pca:1`` removes from the oracle's 14 channels (at 10 steps no metric moved beyond seed noise), so the verdict rule
itself is checked on constructed per-clip values where the answer is known.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from vidprobe.features.compress import compress_store, store_bytes
from vidprobe.pipeline.compress_check import CompressCheckError, StoreRuns, check_stores, compare_runs

TRAIN = {
    "probe": {"preset": "tiny", "width": 32, "depth": 1, "num_heads": 2, "dpt_features": 8,
              "dpt_out_channels": [8, 8, 8, 8], "dpt_last_hidden": 8, "camera_depth": 1, "camera_iters": 1},
    "epochs": 1000, "max_steps": 3, "batch_size": 2, "out_hw": [8, 14], "checkpoint_epochs": 0,
    "sampler": {"num_frames": 4, "min_gap": 2, "max_frame": 13, "snap": 2}, "optim": {"lr": 3e-3, "warmup_frac": 0.1},
    "loader": {"workers": 0},  # batches loaded in the training process: no worker process per 3-step run
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset

    root = tmp_path_factory.mktemp("cc")
    data = write_synthetic_dataset(root / "data", 6, num_frames=13, hw=(16, 28), seed=4, test_fraction=0.5,
                                   progress=False)
    extract_dataset("oracle", data, root / "plain", layers=[1], backbone_kwargs={"height": 16, "width": 28, "patch": 4},
                    progress=False)
    compress_store(root / "plain", "int8", out=root / "int8", progress=False)
    return root


def test_compress_check_end_to_end_reports_ratio_and_verdicts_and_reuses_runs(stores, tmp_path):
    from vidprobe.cli import app

    cfg = tmp_path / "train.yaml"
    cfg.write_text(json.dumps(TRAIN))  # JSON is YAML
    out = tmp_path / "check.json"
    args = ["compress-check", str(stores / "plain"), str(stores / "int8"), "-d", str(stores / "data"), "--seeds", "0,1",
            "-c", str(cfg), "-o", str(out), "--work", str(stores / "runs"), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    a, b = store_bytes(stores / "plain"), store_bytes(stores / "int8")
    assert doc["uncompressed"]["bytes"] == a and doc["compressed"]["bytes"] == b
    assert doc["ratio"] == pytest.approx(a / b) and doc["ratio"] > 1.5 and doc["compressed"]["codec"] == "int8"
    assert f"ratio {a / b:.2f}x fewer bytes" in r.output and "seed noise = max - min over the seeds" in r.output
    rows = doc["metrics"]
    assert {"point_err", "depth_err", "auc_30", "rra_15"} <= set(rows)
    for name, row in rows.items():
        assert row["verdict"] in ("within noise", "outside noise"), name
        assert row["clips"] == 3 and len(row["uncompressed_per_seed"]) == 2
        assert math.isfinite(row["seed_noise"]) and row["seed_noise"] >= 0
    # the per-seed values are those of the evaluated runs, and the seeds differ
    pe = rows["point_err"]
    for i, seed in enumerate((0, 1)):
        m = json.loads((stores / "runs" / f"plain-{_digest(stores / 'plain')}" / f"seed{seed}" / "eval_last" /
                        "metrics.json").read_text())
        assert pe["uncompressed_per_seed"][i] == pytest.approx(m["metrics"]["point_err"])
    assert pe["seed_noise"] == pytest.approx(abs(pe["uncompressed_per_seed"][0] - pe["uncompressed_per_seed"][1]))
    assert pe["seed_noise"] > 0
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 0 and r2.output.count("already trained") == 4
    assert json.loads(out.read_text())["metrics"] == rows


def _digest(path):
    import hashlib

    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]


def test_identical_features_give_zero_change_on_every_metric(stores, tmp_path):
    compress_store(stores / "int8", "none", out=tmp_path / "decoded", progress=False)  # a plain copy of the int8 store
    doc = check_stores(stores / "int8", tmp_path / "decoded", stores / "data", stores / "runs", [0, 1], train=TRAIN,
                       progress=False, echo=lambda s: None)
    assert doc["compressed"]["codec"] == "none" and doc["all_within_noise"]
    assert all(r["change"] == 0 and r["low"] == 0 == r["high"] for r in doc["metrics"].values())


def _runs(values: dict[str, dict[int, list[float]]]) -> StoreRuns:
    r = StoreRuns(store=None, codec="x", bytes=1, videos=1)  # type: ignore[arg-type]
    for metric, per_seed in values.items():
        for seed, vals in per_seed.items():
            r.per_seed.setdefault(seed, {})[metric] = {f"c{i}": v for i, v in enumerate(vals)}
    return r


def test_verdict_needs_a_resolved_change_larger_than_the_seed_noise():
    clips = [0.1 * i for i in range(10)]
    orig = _runs({"point_err": {0: clips, 1: [v + 0.1 for v in clips]},  # seed noise 0.1
                  "depth_err": {0: clips, 1: [v + 0.3 for v in clips]},  # seed noise 0.3
                  "abs_rel": {0: clips, 1: [v + 0.1 for v in clips]},  # seed noise 0.1
                  "auc_30": {0: clips, 1: clips}})
    comp = _runs({"point_err": {0: [v + 0.5 for v in clips], 1: [v + 0.6 for v in clips]},  # +0.5 on both seeds
                  "depth_err": {0: [v + 0.2 for v in clips], 1: [v + 0.5 for v in clips]},  # +0.2 < noise 0.3
                  "abs_rel": {0: [v + 0.6 for v in clips], 1: [v + 0.15 for v in clips]},  # +0.6, but +0.05 on seed 1
                  "auc_30": {0: [v + (0.05 if i % 2 else -0.05) for i, v in enumerate(clips)], 1: clips}})
    rows = compare_runs(orig, comp, n_resamples=500)
    assert rows["point_err"]["change"] == pytest.approx(0.5) and rows["point_err"]["seed_noise"] == pytest.approx(0.1)
    assert rows["point_err"]["verdict"] == "outside noise" and rows["point_err"]["direction"] == "worse"
    assert rows["point_err"]["low"] == pytest.approx(0.5) and rows["point_err"]["high"] == pytest.approx(0.5)
    assert rows["point_err"]["change_per_seed"] == pytest.approx([0.5, 0.5])
    assert rows["depth_err"]["verdict"] == "within noise" and rows["depth_err"]["low"] > 0  # resolved, below noise
    # resolved and |mean change| 0.325 > noise, but seed 1 moved less than the seeds do: not the codec's effect
    assert rows["abs_rel"]["verdict"] == "within noise" and rows["abs_rel"]["low"] > 0.1
    assert rows["auc_30"]["verdict"] == "within noise" and rows["auc_30"]["low"] < 0 < rows["auc_30"]["high"]
    one = compare_runs(_runs({"point_err": {0: clips}}), _runs({"point_err": {0: [v + 1 for v in clips]}}))
    assert one["point_err"]["verdict"] == "-" and math.isnan(one["point_err"]["seed_noise"])


def test_stores_of_other_features_are_refused(stores, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(stores / "int8", other)
    m = json.loads((other / "manifest.json").read_text())
    m["settings"]["backbone"] = "pixels"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CompressCheckError, match="settings differ .*backbone"):
        check_stores(stores / "plain", other, stores / "data", tmp_path / "w", [0, 1], train=TRAIN, progress=False)
    with pytest.raises(CompressCheckError, match="--seeds"):
        check_stores(stores / "plain", stores / "int8", stores / "data", tmp_path / "w", [0, 0], train=TRAIN)
