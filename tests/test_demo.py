import json

from typer.testing import CliRunner

from vidprobe.cli import _load, app
from vidprobe.results import ResultsDB


def test_demo_quick_end_to_end_and_resume(tmp_path):
    _load()
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "No model weights were loaded" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["failed"], summary["failed"]
    assert set(summary["backbones"]) == {"oracle", "pixels", "dinov2-small"}
    for m in summary["backbones"].values():
        assert m["point_err"] is not None and m["point_err"] > 0
    html = (out / "report" / "report.html").read_text()
    assert "No model weights were loaded" in html and "oracle" in html
    md = (out / "report" / "report.md").read_text()
    assert "No model weights were loaded" in md
    # the benchmark table has a row per backbone on the synthetic data
    assert "| model | synthetic Point Err x10 |" in md
    for name in ("oracle", "pixels", "dinov2-small"):
        assert any(x.startswith(f"| {name} (") for x in md.splitlines()), name
    assert "Report:" in r.output and str(out / "report" / "report.html") in r.output
    assert set(summary["seconds_per_backbone"]) == set(summary["backbones"])
    glbs = list((out / "report" / "clouds").glob("*.glb"))
    assert glbs and list((out / "report" / "clouds").glob("*_pred.ply"))
    from vidprobe.report.export import read_glb

    gltf, _ = read_glb(glbs[0])
    assert [m["primitives"][0]["mode"] for m in gltf["meshes"]][:2] == [0, 0]
    assert list((out / "runs" / "oracle" / "eval_last" / "clips").glob("*.ply"))
    with ResultsDB(out / "results.db") as db:
        assert len(db.runs(status="done", kind="probe")) == 3
    # a rerun resumes: nothing is trained or evaluated again
    mtime = (out / "runs" / "oracle" / "checkpoints" / "last.json").stat().st_mtime_ns
    r2 = CliRunner().invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    assert "training a tiny probe" not in r2.output
    assert (out / "runs" / "oracle" / "checkpoints" / "last.json").stat().st_mtime_ns == mtime
    with ResultsDB(out / "results.db") as db:
        assert len(db.runs(status="done", kind="probe")) == 3
