"""The results database: round trip, sweep-cell look-up, atomic writes, concurrent writers, schema checks."""

import math
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from vidprobe.metrics.stats import CI
from vidprobe.results import SCHEMA_VERSION, ResultsDB, ResultsDBError, config_hash


def _cell(**kw):
    base = dict(backbone="wan2.1-1.3b", dataset="co3d", layer=20, timestep=749, probe="p1024", seed=42)
    base.update(kw)
    return base


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.db"
    cfg = {"probe": {"width": 1024}, "lr": 1e-4, "path": tmp_path}  # a Path is stored as its string
    with ResultsDB(path) as db:
        assert db.schema_version == SCHEMA_VERSION
        rid = db.add_run("evaluate", name="wan-l20", config=cfg, checkpoint=tmp_path / "best.safetensors",
                         checkpoint_kind="best", **_cell())  # fmt: skip
        db.add_metrics(rid, {"auc_30": 0.73, "point_err": 0.0284, "depth_err": float("nan")},
                       ci={"auc_30": CI(0.73, 0.70, 0.76, 100), "point_err": (0.027, 0.030)})  # fmt: skip
        db.add_clip_metrics(rid, [("seq1/0", {"point_err": 0.02}), ("seq2/0", {"point_err": 0.04})])
        db.add_curve(rid, "train/loss", [(0, 2.0), (10, 1.5), (20, 1.2)])
        db.add_curve_point(rid, "train/loss", 10, 1.4)  # replaces step 10
        db.finish_run(rid)
    with ResultsDB(path) as db:  # reopen: everything persisted
        run = db.get_run(rid)
        assert run["status"] == "done" and run["kind"] == "evaluate" and run["checkpoint_kind"] == "best"
        assert run["layer"] == 20 and run["timestep"] == 749 and run["seed"] == 42
        assert run["config"]["probe"] == {"width": 1024} and run["config"]["path"] == str(tmp_path)
        assert run["config_hash"] == config_hash(cfg)
        assert run["versions"]["torch"] and run["versions"]["python"]
        assert run["checkpoint"].endswith("best.safetensors")
        m = db.get_metrics(rid)
        assert m == {"auc_30": 0.73, "depth_err": None, "point_err": 0.0284}
        rows = {r["metric"]: r for r in db.metric_rows(rid, scope="aggregate")}
        assert (rows["auc_30"]["ci_low"], rows["auc_30"]["ci_high"]) == (0.70, 0.76)
        assert rows["point_err"]["ci_low"] == 0.027 and rows["depth_err"]["ci_low"] is None
        assert db.clip_metrics(rid, "point_err") == {"seq1/0": 0.02, "seq2/0": 0.04}
        assert db.curve(rid, "train/loss") == [(0, 2.0), (10, 1.4), (20, 1.2)]
        assert db.curve_names(rid) == ["train/loss"]
        table = db.table(["auc_30", "point_err", "missing"], with_ci=True)
        assert len(table) == 1
        row = table[0]
        assert row["backbone"] == "wan2.1-1.3b" and row["auc_30"] == 0.73 and row["missing"] is None
        assert row["auc_30_ci_high"] == 0.76
        assert db.table() == db.table(db.metric_names())


def test_find_run_skips_done_cells(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        assert db.find_run(kind="train", **_cell()) is None
        a = db.add_run("train", config={"x": 1}, **_cell())
        assert db.find_run(kind="train", **_cell()) is None  # still running
        assert db.find_run(status=None, kind="train", **_cell())["run_id"] == a
        db.finish_run(a)
        assert db.find_run(kind="train", **_cell())["run_id"] == a
        assert db.find_run(kind="train", **_cell(layer=10)) is None
        assert db.find_run(kind="train", **_cell(seed=0)) is None
        assert db.find_run(kind="evaluate", **_cell()) is None
        # a string layer matches the numeric column (SQLite numeric affinity)
        assert db.find_run(kind="train", **_cell(layer="20"))["run_id"] == a
        # None matches NULL: a non-diffusion backbone has no timestep
        b = db.add_run("train", status="done", **_cell(backbone="dinov2", timestep=None))
        assert db.find_run(**_cell(backbone="dinov2", timestep=None))["run_id"] == b
        assert db.find_run(**_cell(backbone="dinov2")) is None
        # by config
        assert db.find_run(config={"x": 1})["run_id"] == a
        assert db.find_run(config={"x": 2}) is None
        # the latest of several matching runs
        c = db.add_run("train", status="done", config={"x": 1}, **_cell())
        assert db.find_run(kind="train", **_cell())["run_id"] == c
        failed = db.add_run("train", **_cell(seed=7))
        db.finish_run(failed, status="failed")
        assert db.find_run(**_cell(seed=7)) is None
        assert [r["run_id"] for r in db.runs(backbone="wan2.1-1.3b")] == [a, c, failed]
        with pytest.raises(ValueError, match="colour"):
            db.find_run(colour="red")


def test_bad_values_are_refused(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        with pytest.raises(ValueError, match="status"):
            db.add_run("train", status="finished")
        with pytest.raises(ValueError, match="checkpoint_kind"):
            db.add_run("evaluate", checkpoint_kind="middle")
        with pytest.raises(ValueError, match="kind"):
            db.add_run("")
        rid = db.add_run("train")
        with pytest.raises(KeyError):
            db.add_metrics(rid + 99, {"a": 1.0})
        with pytest.raises(KeyError):
            db.update_run(rid + 99, status="done")
        with pytest.raises(KeyError):
            db.get_run(rid + 99)
        with pytest.raises(ValueError, match="intervals"):
            db.add_metrics(rid, {"a": 1.0}, ci={"b": (0, 1)})
        with pytest.raises(ValueError, match="reserved"):
            db.add_clip_metrics(rid, [("aggregate", {"a": 1.0})])
        with pytest.raises(ValueError, match="unknown field"):
            db.update_run(rid, colour="red")


def test_writes_are_atomic(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        rid = db.add_run("train")
        # a failure in the middle of a transaction leaves nothing behind
        with pytest.raises(RuntimeError):
            with db.transaction() as con:
                con.execute("INSERT INTO metrics (run_id, metric, split, scope, value) VALUES (?, 'a', 'test', 'aggregate', 1)", (rid,))  # noqa: E501
                raise RuntimeError("crash")
        assert db.get_metrics(rid) == {}
        # a batch with one bad row is refused entirely
        with pytest.raises(ValueError):
            db.add_clip_metrics(rid, [("c1", {"a": 1.0}), ("c2", {"a": "not a number"})])
        assert db.clip_metrics(rid, "a") == {}
        # deleting a run removes its metrics and curves
        db.add_metrics(rid, {"a": 1.0})
        db.add_curve(rid, "loss", [(0, 1.0)])
        db.delete_run(rid)
        assert db.metric_rows(rid) == [] and db.curve(rid, "loss") == []
        assert db._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from vidprobe.results import ResultsDB
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with ResultsDB(path, timeout=60) as db:
        open(path + "." + tag + ".ready", "w").close()
        while not os.path.exists(path + ".go"):  # both writers start together
            time.sleep(0.005)
        for i in range(n):
            rid = db.add_run("train", name=f"{tag}-{i}", seed=i, versions={"test": "1"})
            db.add_metrics(rid, {"m1": i, "m2": i * 2.0})
            db.add_clip_metrics(rid, [(f"clip{k}", {"m1": float(k)}) for k in range(5)])
            db.add_curve(rid, "loss", [(s, 1.0 / (s + 1)) for s in range(10)])
            db.finish_run(rid)
    """
)


def test_concurrent_writers_from_two_processes(tmp_path):
    path = tmp_path / "shared.db"
    n = 100
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(n)], stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"shared.db.{t}.ready").exists() for t in "ab"):
        if not all(p.poll() is None for p in procs):
            errs = [p.communicate()[1] for p in procs if p.poll() is not None]
            raise AssertionError(f"a writer exited before starting: {errs}")
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    (tmp_path / "shared.db.go").touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with ResultsDB(path) as db:
        runs = db.runs(status="done")
        assert len(runs) == 2 * n
        assert sorted(r["name"] for r in runs) == sorted(f"{t}-{i}" for t in "ab" for i in range(n))
        assert len(db.metric_rows(scope="aggregate")) == 2 * n * 2
        assert len(db.metric_rows(metric="m1")) == 2 * n * 6
        for r in runs:
            assert db.get_metrics(r["run_id"])["m2"] == 2.0 * r["seed"]
            assert len(db.curve(r["run_id"], "loss")) == 10


def test_refuses_foreign_and_newer_files(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ResultsDBError, match="junk.db"):
        ResultsDB(junk)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(ResultsDBError, match="other tables"):
        ResultsDB(other)
    newer = tmp_path / "newer.db"
    ResultsDB(newer).close()
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(ResultsDBError, match="newer"):
        ResultsDB(newer)
    with pytest.raises(ResultsDBError, match="directory"):
        ResultsDB(tmp_path)


def test_nan_value_stored_as_null_and_replaced(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        rid = db.add_run("evaluate")
        db.add_metrics(rid, {"x": math.inf}, split="val")
        assert db.get_metrics(rid, split="val") == {"x": None}
        db.add_metrics(rid, {"x": 3.0}, split="val")  # one row per run x metric x split x scope
        assert db.get_metrics(rid, split="val") == {"x": 3.0}
        assert len(db.metric_rows(rid)) == 1
