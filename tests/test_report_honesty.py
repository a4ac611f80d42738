"""The report never overstates: every row names its weights, checkpoints are not seeds, small samples and
untrained heads are said (issue 15)."""

from __future__ import annotations

import json

import pytest

from vidprobe.features.manifest import prepare_store, store_settings
from vidprobe.report.html import benchmark_table, load_runs, write_report
from vidprobe.report.provenance import is_control, weights_from_settings, weights_of_run
from vidprobe.results import ResultsDB

PRETRAINED = {"kind": "pretrained", "label": "pretrained facebook/dinov2-large@unpinned", "model_id": "facebook/dinov2-large",
              "revision": None, "source": "store manifest"}
TINY = {"kind": "tiny", "label": "tiny random", "model_id": "facebook/dinov2-large", "revision": None,
        "source": "store manifest"}
METRICS = {"point_err": 0.05, "depth_err": 0.2, "auc_5": 0.1, "auc_30": 0.5}


def _add(db, name, backbone="dinov2-large", seed=42, kind="last", run_dir=None, metrics=None, weights=None,
         config=None, dataset="/data/co3d_ref", n_clips=12, ci=None):
    cfg = dict(config or {})
    cfg["eval"] = {"run_dir": run_dir or f"/runs/{name}", "which": kind}
    if weights is not None:
        cfg["weights"] = weights
    rid = db.add_run("probe", name=name, backbone=backbone, dataset=dataset, layer=23, probe="reference", seed=seed,
                     config=cfg, checkpoint_kind=kind)
    m = dict(metrics or METRICS)
    db.add_metrics(rid, m, ci=ci or {k: (v * 0.9, v * 1.1) for k, v in m.items()})
    db.add_clip_metrics(rid, [(f"c{i}", {"point_err": m["point_err"]}) for i in range(n_clips)])
    db.finish_run(rid)
    return rid


def _md_rows(md: str) -> list[str]:
    lines = md.splitlines()
    hdr = next(i for i, x in enumerate(lines) if x.startswith("| model |"))
    out = []
    for x in lines[hdr + 2:]:
        if not x.startswith("|"):
            break
        out.append(x)
    return out


@pytest.mark.parametrize("settings,kind,label", [
    ({"backbone": "dinov2-large", "model_id": "facebook/dinov2-large", "revision": "c0ffee", "backbone_kwargs": {}},
     "pretrained", "pretrained facebook/dinov2-large@c0ffee"),
    ({"backbone": "dinov2-large", "model_id": "facebook/dinov2-large", "revision": None, "backbone_kwargs": {}},
     "pretrained", "pretrained facebook/dinov2-large@unpinned"),
    ({"backbone": "dinov2-small", "model_id": "facebook/dinov2-small", "backbone_kwargs": {"tiny": True}},
     "tiny", "tiny random"),
    ({"backbone": "dinov2-large", "model_id": "facebook/dinov2-large", "backbone_kwargs": {"random_init": True}},
     "random_init", "random init"),
    ({"backbone": "pixels", "model_id": None, "backbone_kwargs": {}}, "control", "control (pixels)"),
    ({"backbone": "random-dinov2", "model_id": None, "backbone_kwargs": {"tiny": True}}, "control", "control (random-dinov2)"),
    ({"backbone": "vggt-1b", "model_id": None, "backbone_kwargs": {}}, "unknown", "weights unknown"),
    ({}, "unknown", "weights unknown"),
])
def test_weights_label_from_manifest_settings(settings, kind, label):
    w = weights_from_settings(settings)
    assert (w["kind"], w["label"]) == (kind, label)


def test_control_names_match_the_registry():
    from vidprobe.backbones.base import registry

    specs = registry()
    assert specs, "empty registry"
    for name, entry in specs.items():
        spec = entry[0] if isinstance(entry, tuple) else entry
        assert is_control(name) == (spec.family == "control"), name


def test_tiny_store_row_is_labelled_and_noticed_without_a_notice(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        _add(db, "real", weights=PRETRAINED)
        _add(db, "tiny", weights=TINY, metrics={**METRICS, "point_err": 0.5}, config={"x": 1})
    md = write_report(db_path, tmp_path / "rep")["md"].read_text()  # no notice passed
    rows = _md_rows(md)
    labels = [r.split("|")[1].strip() for r in rows]
    assert labels == ["**Pretrained models**", "dinov2-large (L23, reference) [weights: pretrained facebook/dinov2-large@unpinned]",
                      "*published: DINOv2*", "**Random-weight models (tiny / random init: not the pretrained networks)**",
                      "dinov2-large (L23, reference) [weights: tiny random]"]
    # the tiny row stands apart: no published number right under it, and a computed notice says why
    assert "not the pretrained model" in rows[-1]
    notice = next(x for x in md.splitlines() if x.startswith("> **Weights.**"))
    assert "1 of 2 table rows are not pretrained models" in notice and "tiny random: dinov2-large" in notice


def test_old_db_infers_weights_from_the_recorded_store_else_unknown(tmp_path):
    store = tmp_path / "store"
    prepare_store(store, store_settings("dinov2-small", model_id="facebook/dinov2-small",
                                        backbone_kwargs={"tiny": True, "device": "cpu"}), [(1, None)])
    db_path = tmp_path / "old.db"
    with ResultsDB(db_path) as db:
        _add(db, "a", backbone="dinov2-small", config={"train": {"features": str(store)}})
        _add(db, "b", backbone="dinov2-large", config={"train": {"features": str(tmp_path / "gone")}})
        _add(db, "c", backbone="oracle")
    runs = {r["name"]: r for r in load_runs(db_path)}
    assert weights_of_run(runs["a"])["label"] == "tiny random"
    assert weights_of_run(runs["b"])["label"] == "weights unknown"
    assert weights_of_run(runs["c"])["label"] == "control (oracle)"
    md = write_report(db_path, tmp_path / "rep")["md"].read_text()
    assert "dinov2-large (L23, reference) [weights unknown]" in md


def test_two_checkpoints_of_one_training_run_are_not_two_seeds(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:  # `vidprobe evaluate --which both`: one training run, seed 42, two rows
        _add(db, "run", weights=PRETRAINED, kind="best", run_dir="/runs/x", metrics={**METRICS, "point_err": 0.02})
        _add(db, "run", weights=PRETRAINED, kind="last", run_dir="/runs/x", metrics={**METRICS, "point_err": 0.04},
             ci={"point_err": (0.035, 0.047)})
    _, rows = benchmark_table(load_runs(db_path))
    (row,) = rows
    cell, notes = row["cells"]["CO3Dv2"], row["notes"]["CO3Dv2"]
    assert row["seeds"]["CO3Dv2"] == 1
    assert cell["point_err"] == "0.400 [0.350, 0.470]"  # the last checkpoint, with its bootstrap interval over clips
    assert not any("seeds" in n and "mean" in n for n in notes) and "1 seed: bootstrap interval over clips" in notes


def test_only_best_evaluated_is_marked_and_same_seed_twice_is_one_seed(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        _add(db, "r1", weights=PRETRAINED, kind="best", run_dir="/runs/1", seed=7)
        _add(db, "r2", weights=PRETRAINED, kind="best", run_dir="/runs/2", seed=7, metrics={**METRICS, "point_err": 0.07})
    _, (row,) = benchmark_table(load_runs(db_path))
    assert row["seeds"]["CO3Dv2"] == 1 and "best ckpt" in row["notes"]["CO3Dv2"]
    assert row["cells"]["CO3Dv2"]["point_err"].startswith("0.700 [")  # the latest training run of seed 7


def test_distinct_seeds_get_a_t_interval(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        for seed, pe in ((1, 0.03), (2, 0.05)):
            for kind in ("best", "last"):
                _add(db, f"s{seed}", weights=PRETRAINED, kind=kind, run_dir=f"/runs/s{seed}", seed=seed,
                     metrics={**METRICS, "point_err": pe if kind == "last" else 0.001})
    _, (row,) = benchmark_table(load_runs(db_path))
    assert row["seeds"]["CO3Dv2"] == 2 and "mean of 2 seeds" in row["notes"]["CO3Dv2"]
    v = row["cells"]["CO3Dv2"]["point_err"]
    lo, hi = (float(x) for x in v[7:-1].split(","))
    half = 12.706 * 0.1414214 / 2 ** 0.5  # t(0.975, 1) * sd(0.3, 0.5) / sqrt(2), at x10
    assert v.startswith("0.400 [") and abs(lo - (0.4 - half)) < 1e-2 and abs(hi - (0.4 + half)) < 1e-2


def test_small_sample_and_untrained_head_are_stated(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        _add(db, "px", backbone="pixels", metrics={**METRICS, "point_err": 0.09, "auc_30": 0.0})
        _add(db, "bad", weights=PRETRAINED, metrics={**METRICS, "point_err": 0.10, "auc_30": 0.0}, n_clips=4)
        _add(db, "ok", backbone="vjepa-vith16-384", weights={**PRETRAINED, "label": "pretrained v@unpinned"},
             metrics={**METRICS, "point_err": 0.05, "auc_30": 0.4})
    _, rows = benchmark_table(load_runs(db_path))
    notes = {r["backbone"]: r["notes"]["CO3Dv2"] for r in rows}
    assert "only 4 test clips (< 10)" in notes["dinov2-large"]
    assert notes["dinov2-large"][-3:] == ["untrained at this budget", "camera head: AUC@30 = 0",
                                          "Point Err 1.000 not below the pixels control's 0.900"]
    assert not any("untrained" in n or "pixels control" in n or "clips (<" in n for n in notes["vjepa-vith16-384"])
    assert "camera head: AUC@30 = 0" in notes["pixels"] and "untrained at this budget" not in notes["pixels"]
    assert [r["group"] for r in rows] == ["pretrained", "pretrained", "control"]  # controls last, apart


def test_evaluate_records_the_weights_of_the_store_manifest(tmp_path):
    """End to end: evaluate reads the label from the store's manifest (edited here), `--which both` stays one seed."""
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset
    from vidprobe.pipeline.evaluate import evaluate_run
    from vidprobe.probe.train import load_config, train

    data, feats, out = tmp_path / "data", tmp_path / "feats", tmp_path / "run"
    write_synthetic_dataset(data, 5, num_frames=17, hw=(28, 49), seed=1, test_fraction=0.45, progress=False)
    extract_dataset("oracle", data, feats, layers=[1], backbone_kwargs={"height": 28, "width": 49}, progress=False)
    cfg = {"features": str(feats), "dataset": str(data), "out": str(out), "probe": {"preset": "tiny"}, "epochs": 1,
           "batch_size": 2, "name": "t", "seed": 3, "sampler": {"num_frames": 4, "min_gap": 3, "max_frame": 17, "snap": 4}}
    train(load_config(None, base=cfg), progress=False)
    man = json.loads((feats / "manifest.json").read_text())
    man["settings"]["backbone_kwargs"]["tiny"] = True
    man["settings"]["backbone"] = "dinov2-small"
    (feats / "manifest.json").write_text(json.dumps(man))
    db = tmp_path / "r.db"
    for which in ("best", "last"):
        evaluate_run(out, which=which, db_path=db, save_clips=0, progress=False, n_resamples=50)
    with ResultsDB(db) as rdb:
        got = [r["config"]["weights"] for r in rdb.runs(kind="probe")]
    assert [w["label"] for w in got] == ["tiny random", "tiny random"] and got[0]["source"] == "store manifest"
    md = write_report(db, tmp_path / "rep")["md"].read_text()
    row = next(x for x in _md_rows(md) if x.startswith("| dinov2-small"))
    assert "[weights: tiny random]" in row and "mean of 2 seeds" not in row and "only" in row and "test clips" in row
