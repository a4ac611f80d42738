"""Evaluation: metrics, intervals, files, results database rows, reference compat mode, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vidprobe.pipeline.evaluate import EvalError, evaluate_run, read_curves
from vidprobe.probe.train import load_config, train

KEYS = {"point_err", "point_err_unweighted", "depth_err", "abs_rel", "rmse", "delta_1_25", "auc_3", "auc_5",
        "auc_10", "auc_15", "auc_30", "rra_5", "rra_15", "rta_5", "rta_15"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset

    root = tmp_path_factory.mktemp("eval")
    data, feats = root / "data", root / "feats"
    write_synthetic_dataset(data, 7, num_frames=25, hw=(28, 49), seed=1, test_fraction=0.45, progress=False)
    extract_dataset("oracle", data, feats, layers=[1], backbone_kwargs={"height": 28, "width": 49}, progress=False)
    out = root / "run"
    cfg = {"features": str(feats), "dataset": str(data), "out": str(out), "probe": {"preset": "tiny"}, "epochs": 3,
           "batch_size": 2, "eval_every_epochs": 1, "name": "oracle-tiny", "seed": 5,
           "sampler": {"num_frames": 4, "min_gap": 3, "max_frame": 25, "snap": 4}}
    train(load_config(None, base=cfg), progress=False)
    return out


def test_evaluate_writes_metrics_clips_and_db(run_dir, tmp_path):
    db = tmp_path / "results.db"
    res = evaluate_run(run_dir, which="last", db_path=db, save_clips=2, progress=False, n_resamples=200)
    assert KEYS <= set(res.metrics)
    for k in KEYS:
        assert math.isfinite(res.metrics[k]), k
    assert 0 <= res.metrics["auc_30"] <= 1 and res.metrics["point_err"] > 0
    n = int(res.metrics["num_clips"])
    assert n == len(res.per_clip) >= 3
    # the aggregate of a dense metric is the mean of its per-clip values; the CI brackets it
    assert res.metrics["point_err"] == pytest.approx(sum(c["point_err"] for c in res.per_clip) / n)
    lo, hi = res.ci["point_err"]
    assert lo <= res.metrics["point_err"] <= hi and lo < hi
    assert res.which == "last" and res.checkpoint.endswith("step_0000006") and res.step == 6
    # metrics.json
    doc = json.loads((run_dir / "eval_last" / "metrics.json").read_text())
    assert doc["which"] == "last" and doc["split"] == "test" and doc["compat"] == "clean"
    assert doc["metrics"]["point_err"] == pytest.approx(res.metrics["point_err"])
    assert len(doc["per_clip"]) == n and all(len(c["frames"]) == 4 for c in doc["per_clip"])
    # saved clips: tensors at the output size, point clouds
    files = sorted((run_dir / "eval_last" / "clips").glob("*.safetensors"))
    assert len(files) == 2
    t = load_file(str(files[0]))
    S, H, W = 4, 28, 49
    assert t["images"].shape == (S, 3, H, W) and t["pred_points"].shape == (S, H, W, 3)
    assert t["gt_points"].shape == (S, H, W, 3) and t["pred_depth"].shape == (S, H, W)
    assert t["pred_extrinsics"].shape == (S, 3, 4) and t["gt_intrinsics"].shape == (S, 3, 3)
    assert {"pred_points_conf", "pred_depth_conf", "gt_confidence", "valid", "pred_points_aligned"} <= set(t)
    # GT is in the normalised frame: first camera is the identity
    assert torch.allclose(t["gt_extrinsics"][0], torch.eye(3, 4), atol=1e-5)
    with safe_open(str(files[0]), "pt") as f:
        assert json.loads(f.metadata()["which"]) == "last"
    plys = sorted(p.name for p in (run_dir / "eval_last" / "clips").glob("*.ply"))
    assert len(plys) == 4 and any(p.endswith("_pred.ply") for p in plys)
    from vidprobe.data.ply import read_ply

    pts, cols = read_ply(run_dir / "eval_last" / "clips" / plys[0])
    assert pts.shape[1] == 3 and cols is not None and len(pts) > 100
    # the results database
    from vidprobe.results import ResultsDB

    with ResultsDB(db) as rdb:
        run = rdb.get_run(res.run_id)
        assert run["kind"] == "probe" and run["status"] == "done" and run["checkpoint_kind"] == "last"
        assert run["backbone"] == "oracle" and run["layer"] == 1 and run["probe"] == "tiny" and run["seed"] == 5
        assert run["name"] == "oracle-tiny" and run["config"]["eval"]["compat"] == "clean"
        assert "torch" in run["versions"]
        m = rdb.get_metrics(res.run_id, split="test")
        assert KEYS <= set(m) and m["auc_30"] == pytest.approx(res.metrics["auc_30"])
        rows = {r["metric"]: r for r in rdb.metric_rows(res.run_id, scope="aggregate")}
        assert rows["point_err"]["ci_low"] == pytest.approx(lo)
        clips = rdb.clip_metrics(res.run_id, "point_err", split="test")
        assert len(clips) == n
        loss = rdb.curve(res.run_id, "loss")
        assert [s for s, _ in loss] == list(range(1, 7))
        assert [s for s, _ in rdb.curve(res.run_id, "eval_loss")] == [2, 4, 6]
    assert read_curves(run_dir)["loss"] == loss


def test_reference_compat_and_best(run_dir):
    clean = evaluate_run(run_dir, which="best", save_clips=0, progress=False, n_resamples=100)
    ref = evaluate_run(run_dir, which="best", compat="reference", save_clips=0, progress=False, n_resamples=100)
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert clean.checkpoint.endswith(best["path"]) and clean.which == "best"
    assert (run_dir / "eval_best" / "metrics.json").exists()
    assert (run_dir / "eval_best" / "metrics_test_reference.json").exists()
    assert KEYS <= set(ref.metrics)
    # with every pixel valid the dense definitions agree (up to the release's +1e-6 in Point Err's denominator);
    # the camera numbers are computed differently
    assert ref.metrics["point_err"] == pytest.approx(clean.metrics["point_err"], rel=1e-5)
    assert ref.metrics["depth_err"] == pytest.approx(clean.metrics["depth_err"], rel=1e-9)
    doc = json.loads((run_dir / "eval_best" / "metrics_test_reference.json").read_text())
    assert doc["metric_settings"]["mode"] == "reference" and doc["metric_settings"]["pixel_set"] == "all"
    assert doc["metrics"]["failed_clips"] == 0 and doc["failed_clips"] == {}
    assert any(ref.metrics[k] != clean.metrics[k] for k in ("auc_30", "auc_15", "rta_15", "rra_15", "auc_10"))


def test_bad_inputs(run_dir, tmp_path):
    with pytest.raises(EvalError, match="not a run directory"):
        evaluate_run(tmp_path / "missing", progress=False)
    with pytest.raises(EvalError, match="which"):
        evaluate_run(run_dir, which="first", progress=False)
    with pytest.raises(EvalError, match="compat"):
        evaluate_run(run_dir, compat="vggt", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="config.yaml"):
        evaluate_run(tmp_path / "empty", progress=False)


def test_evaluate_cli_both(run_dir, tmp_path):
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    db = tmp_path / "r.db"
    r = CliRunner().invoke(app, ["evaluate", str(run_dir), "--which", "both", "--db", str(db), "--save-clips", "1",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "last:" in r.output and "best:" in r.output and "point_err" in r.output and "auc_30" in r.output
    from vidprobe.results import ResultsDB

    with ResultsDB(db) as rdb:
        assert sorted(x["checkpoint_kind"] for x in rdb.runs(kind="probe")) == ["best", "last"]
    r = CliRunner().invoke(app, ["evaluate", str(run_dir), "--which", "nope"])
    assert r.exit_code == 2 and "which" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "none")])
    assert r.exit_code == 2 and "not a run directory" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--help"])
    assert r.exit_code == 0 and "--compat" in r.output


def test_compat_defaults_to_the_runs_own(run_dir, monkeypatch):
    # TrainConfig.compat ("clean" | "reference") decides the default; --compat overrides it
    import vidprobe.pipeline.evaluate as ev

    real = ev._load_run

    def as_reference(d):
        cfg, info = real(d)
        cfg.compat = "reference"
        return cfg, info

    monkeypatch.setattr(ev, "_load_run", as_reference)
    res = evaluate_run(run_dir, which="last", save_clips=0, progress=False, n_resamples=50)
    assert res.compat == "reference" and res.metrics_file.name == "metrics.json"
    assert json.loads(res.metrics_file.read_text())["metric_settings"]["camera_pairs"] == "release"
    over = evaluate_run(run_dir, which="last", compat="clean", save_clips=0, progress=False, n_resamples=50)
    assert over.compat == "clean" and over.metrics_file.name == "metrics_test_clean.json"


@pytest.fixture()
def diverged_run(run_dir, tmp_path):
    """A copy of the run whose last checkpoint has NaN weights: every prediction is NaN."""
    import shutil

    from safetensors.torch import save_file

    from vidprobe.probe.train import find_checkpoint

    out = tmp_path / "diverged"
    shutil.copytree(run_dir, out)
    ckpt = find_checkpoint(out, "last") / "model.safetensors"
    sd = load_file(str(ckpt))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}, str(ckpt))
    return out


def test_diverged_probe_counts_failed_clips_and_never_scores_better(diverged_run, tmp_path):
    db = tmp_path / "r.db"
    res = evaluate_run(diverged_run, which="last", db_path=db, save_clips=1, progress=False, n_resamples=50)
    n = int(res.metrics["num_clips"])
    assert n >= 3 and res.metrics["failed_clips"] == n and len(res.failed_clips) == n
    assert res.metrics["failed_points"] == n and res.metrics["failed_depth"] == n and res.metrics["failed_camera"] == n
    for k in ("point_err", "point_err_unweighted", "depth_err", "abs_rel", "rmse"):
        assert res.metrics[k] == math.inf, k  # no finite error is claimed
    for k in ("delta_1_25", "auc_3", "auc_30", "rra_5", "rta_15"):
        assert res.metrics[k] == 0.0, k
    assert not any(k.startswith("skipped_") for k in res.metrics)  # nothing silently dropped
    doc = json.loads(res.metrics_file.read_text())
    assert doc["metrics"]["failed_clips"] == n and sorted(doc["failed_clips"]) == sorted(res.failed_clips)
    assert set(next(iter(doc["failed_clips"].values()))) == {"points", "depth", "camera"}
    assert all(c["failed"] == 1.0 for c in doc["per_clip"])
    from vidprobe.results import ResultsDB

    with ResultsDB(db) as rdb:
        m = rdb.get_metrics(res.run_id, split="test")
        assert m["failed_clips"] == n and m["failed_points"] == n
        assert rdb.get_run(res.run_id)["config"]["eval"]["failed_clips"] == res.failed_clips
    # reference mode: the release's numbers, still with the count
    ref = evaluate_run(diverged_run, which="last", compat="reference", save_clips=0, progress=False, n_resamples=50)
    assert ref.metrics["failed_clips"] == n and math.isnan(ref.metrics["point_err"])
    assert ref.metrics["auc_30"] == 0.0


def test_evaluate_cli_exits_1_on_failed_clips(diverged_run):
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    r = CliRunner().invoke(app, ["evaluate", str(diverged_run), "--save-clips", "0", "--no-progress"])
    assert r.exit_code == 1 and "failed clips" in r.output and "NaN/Inf" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(diverged_run), "--save-clips", "0", "--no-progress",
                                 "--allow-failed-clips", "--compat", "reference"])
    assert r.exit_code == 0, r.output
    assert "reference" in r.output
