"""`vidprobe sweep`: one extraction per backbone, DB-skipped cells, resume after a crash, failure isolation, seeds."""


import pytest
import torch
import yaml
from typer.testing import CliRunner

import vidprobe.backbones.base as bb_base
import vidprobe.features.extract as extract_mod
import vidprobe.probe.train as train_mod
from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.cli import _load, app
from vidprobe.data.synthetic import write_synthetic_dataset
from vidprobe.results import ResultsDB
from vidprobe.pipeline.sweep import PerFrame, run_sweep, sweep_table

HW = {"height": 32, "width": 56}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a busy 2-core box are many times faster on one thread (no spinning)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("sweepdata") / "data", 5, num_frames=25, hw=(32, 56),
                                   progress=False, test_fraction=0.4)


def _cfg(data, out, seeds=(1,), **train):
    return {
        "dataset": str(data), "out": str(out),
        "grid": {"backbones": [{"name": "oracle", "kwargs": HW}, {"name": "pixels", "kwargs": HW}], "presets": ["tiny"],
                 "seeds": list(seeds)},
        "train": {"epochs": 100, "max_steps": 3, "batch_size": 2, "out_hw": [16, 28], "device": "cpu",
                  "sampler": {"num_frames": 4, "min_gap": 5, "max_frame": 25, "snap": 4}, **train},
    }


def _spy(monkeypatch, fail=lambda cfg, calls: False):
    """Count train/extract calls; ``fail(cfg, calls)`` decides whether a train call crashes."""
    calls, extracts = [], []
    real_train, real_extract = train_mod.train, extract_mod.extract_dataset

    def counting_train(cfg, resume=False, **kw):
        calls.append((cfg.name, resume))
        if fail(cfg, calls):
            real_train(cfg, resume=resume, stop_after_steps=1, **kw)  # one step and a checkpoint, then "crash"
            raise RuntimeError("injected crash")
        return real_train(cfg, resume=resume, **kw)

    def counting_extract(bb, dataset, out, layers, timesteps, **kw):
        extracts.append((getattr(bb, "spec", None) and bb.spec.name or bb, list(layers), list(timesteps)))
        return real_extract(bb, dataset, out, layers, timesteps, **kw)

    monkeypatch.setattr(train_mod, "train", counting_train)
    monkeypatch.setattr(extract_mod, "extract_dataset", counting_extract)
    return calls, extracts


def test_sweep_runs_skips_done_cells_and_aggregates_seeds(data, tmp_path, monkeypatch):
    cfg = _cfg(data, tmp_path / "sw", seeds=(1, 2))
    calls, extracts = _spy(monkeypatch)
    s = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert sorted(s.done) == sorted(f"{b}_L1_Tnone_tiny_s{k}" for b in ("oracle", "pixels") for k in (1, 2)) and not s.failed
    assert len(calls) == 4 and len(extracts) == 2  # one extraction per backbone, not per cell
    with ResultsDB(tmp_path / "sw" / "results.db") as db:
        runs = db.runs(status="done", kind="probe")
        assert len(runs) == 4 and {r["seed"] for r in runs} == {1, 2} and {r["probe"] for r in runs} == {"tiny"}
        assert all(db.get_metrics(r["run_id"])["point_err"] is not None for r in runs)
    # the second invocation trains nothing and does not touch the features
    calls.clear(), extracts.clear()
    s2 = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert calls == [] and extracts == [] and sorted(s2.skipped) == sorted(s.done) and not s2.done
    # a changed training config is a new cell: not skipped
    cfg2 = _cfg(data, tmp_path / "sw", seeds=(1,), max_steps=2)
    cfg2["grid"]["backbones"] = cfg2["grid"]["backbones"][:1]
    s3 = run_sweep(cfg2, progress=False, echo=lambda *a: None)
    assert s3.done == ["oracle_L1_Tnone_tiny_s1"] and not s3.skipped and len(calls) == 1
    # seeds aggregate: mean and 95% t-interval over the two seeds
    table = sweep_table(tmp_path / "sw" / "results.db", probe="tiny")
    assert sorted((r["backbone"], r["n"]) for r in table) == [("oracle", 1), ("oracle", 2), ("pixels", 2)]  # max_steps 2 is its own setting
    rows = {(r["backbone"], r["n"]): r for r in table}
    for b in ("oracle", "pixels"):
        r = rows.get((b, 2))
        assert r is not None and r["seeds"] == [1, 2]
        with ResultsDB(tmp_path / "sw" / "results.db") as db:
            vals = [db.get_metrics(x["run_id"])["point_err"] for x in db.runs(status="done", kind="probe", backbone=b, probe="tiny")
                    if x["config"]["train"]["max_steps"] == 3]
        assert len(vals) == 2 and r["point_err"] == pytest.approx(sum(vals) / 2)
        assert r["point_err_ci_low"] < r["point_err"] < r["point_err_ci_high"]


def test_a_crashed_cell_is_counted_and_resumes_on_the_next_run(data, tmp_path, monkeypatch):
    cfg = _cfg(data, tmp_path / "sw", checkpoint_every=1)
    crashed: list[str] = []

    def fail(c, calls):
        if c.name.startswith("pixels") and not crashed:
            crashed.append(c.name)
            return True
        return False

    calls, _ = _spy(monkeypatch, fail=fail)
    s = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert s.done == ["oracle_L1_Tnone_tiny_s1"] and list(s.failed) == ["pixels_L1_Tnone_tiny_s1"]
    assert "injected crash" in s.failed["pixels_L1_Tnone_tiny_s1"]
    calls.clear()
    s2 = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert calls == [("pixels_L1_Tnone_tiny_s1", True)]  # only the crashed cell, resumed from its checkpoint
    assert s2.done == ["pixels_L1_Tnone_tiny_s1"] and s2.skipped == ["oracle_L1_Tnone_tiny_s1"]
    with ResultsDB(tmp_path / "sw" / "results.db") as db:
        (run,) = db.runs(status="done", kind="probe", backbone="pixels")
        assert run["config"]["eval"]["step"] == 3  # trained to the end after the resume
    # the CLI: dry run lists the plan with done cells marked; a failing cell makes the exit status 1
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(cfg))
    _load()
    res = CliRunner().invoke(app, ["sweep", str(p), "--dry-run"])
    assert res.exit_code == 0 and "[done] pixels_L1_Tnone_tiny_s1" in res.output and "ONE extraction" in res.output
    res = CliRunner().invoke(app, ["sweep", str(p), "--table"])
    assert res.exit_code == 0 and "oracle" in res.output and "point_err" in res.output


def test_extraction_failure_fails_that_backbones_cells_only(data, tmp_path, monkeypatch):
    cfg = _cfg(data, tmp_path / "sw")
    cfg["grid"]["backbones"][0]["kwargs"] = {**HW, "no_such_option": 1}  # oracle's factory refuses it
    cfg["consistency"] = {"max_queries": 50, "max_frame": 25}
    s = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert s.done == ["pixels_L1_Tnone_tiny_s1"] and list(s.failed) == ["oracle_L1_Tnone_tiny_s1"]
    assert s.failed["oracle_L1_Tnone_tiny_s1"].startswith("extraction")
    with ResultsDB(tmp_path / "sw" / "results.db") as db:  # the sweep also scored the features' consistency
        (c,) = db.runs(status="done", kind="consistency")
        (p,) = db.runs(status="done", kind="probe")
        assert (c["backbone"], c["layer"], c["timestep"]) == (p["backbone"], p["layer"], p["timestep"]) == ("pixels", 1, None)
        assert db.get_metrics(c["run_id"])["corr_err_px"] > 0
    s2 = run_sweep(cfg, progress=False, echo=lambda *a: None)  # the consistency run is not repeated
    with ResultsDB(tmp_path / "sw" / "results.db") as db:
        assert len(db.runs(kind="consistency")) == 1 and s2.skipped == ["pixels_L1_Tnone_tiny_s1"]


class _Temporal:
    """A 'video model' whose feature of frame t mixes in the mean of the whole clip (so context matters)."""

    spec = BackboneSpec(name="test-temporal", family="test", model_id=None, num_layers=1, default_layer=1,
                        input_hw=(16, 16), num_frames=None, frame_layout="per-frame")

    def extract(self, video, layers, timesteps=(None,), clip=None):
        own = video.mean(1, keepdim=True).permute(0, 2, 3, 1)  # [T,H,W,1]
        ctx = video.mean((0, 1))[None, :, :, None].expand_as(own)
        return FeatureSet({(1, None): torch.cat([own, ctx], -1)}, torch.arange(video.shape[0]))


def test_per_frame_wrapper_feeds_each_frame_alone(monkeypatch):
    monkeypatch.setitem(bb_base._REGISTRY, "test-temporal", (_Temporal.spec, lambda **kw: _Temporal()))
    video = torch.rand(5, 3, 16, 16)
    whole = _Temporal().extract(video, [1]).maps[(1, None)]
    pf = PerFrame("test-temporal")
    assert pf.spec.name == "test-temporal+perframe" and pf._inner is None  # lazy: no model until needed
    fs = pf.extract(video, [1], [None])
    got = fs.maps[(1, None)]
    assert got.shape == whole.shape and fs.frame_index.tolist() == list(range(5))
    for t in range(5):
        assert torch.equal(got[t], _Temporal().extract(video[t : t + 1], [1]).maps[(1, None)][0])
    assert torch.equal(got[..., 0], whole[..., 0]) and not torch.allclose(got[..., 1], whole[..., 1])


def test_the_sweeps_compat_reaches_each_cells_training(data, tmp_path):
    """`compat: reference` at the top of a sweep trains every cell in the release's mode (and hashes apart)."""
    from vidprobe.pipeline.sweep import cell_train_config, check_sweep, plan_cells

    cfg = _cfg(data, tmp_path / "sw", max_steps=2)
    cfg["grid"]["backbones"] = cfg["grid"]["backbones"][1:]  # pixels only
    cfg["compat"] = "reference"
    (cell,) = plan_cells(check_sweep(cfg))
    tc, h = cell_train_config(cfg, cell)
    assert tc.compat == "reference" and tc.optim.decay_all and tc.loss["clamp"] == 100.0
    assert h != cell_train_config({**cfg, "compat": "clean"}, cell)[1]  # a different cell for the DB
    s = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert s.done == [cell.name] and not s.failed
    saved = yaml.safe_load((tmp_path / "sw" / "runs" / f"{cell.name}-{h[:8]}" / "config.yaml").read_text())
    assert saved["compat"] == "reference" and saved["drop_last"] is True


def test_a_diverged_cell_is_reported_failed_not_done(data, tmp_path, monkeypatch):
    """A cell whose probe gives non-finite predictions is recorded but counted as failed (exit status 1)."""
    import dataclasses

    import vidprobe.pipeline.evaluate as ev

    real = ev.evaluate_run

    def diverged(run_dir, **kw):
        res = real(run_dir, **kw)
        return dataclasses.replace(res, failed_clips={"clip0": ["points"]}) if "pixels" in str(run_dir) else res

    monkeypatch.setattr(ev, "evaluate_run", diverged)
    s = run_sweep(_cfg(data, tmp_path / "sw"), progress=False, echo=lambda *a: None)
    assert s.done == ["oracle_L1_Tnone_tiny_s1"] and list(s.failed) == ["pixels_L1_Tnone_tiny_s1"]
    assert "non-finite predictions" in s.failed["pixels_L1_Tnone_tiny_s1"]
