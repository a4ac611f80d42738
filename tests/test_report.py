import struct
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from vidprobe.cli import _load, app
from vidprobe.report.export import frustum_lines, read_glb, write_glb
from vidprobe.report.html import write_report
from vidprobe.data.ply import read_ply
from vidprobe.report.published import published_row
from vidprobe.results import ResultsDB


def test_glb_round_trip(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    cols = np.full((50, 3), 200, np.uint8)
    E = torch.cat([torch.eye(3), torch.zeros(3, 1)], -1)[None].repeat(2, 1, 1)
    E[1, 0, 3] = 1.0
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])[None].repeat(2, 1, 1)
    segs = frustum_lines(E, K, (48, 64))
    assert segs.shape == (16, 2, 3)
    # camera 0 sits at the origin: every frustum starts there
    assert np.allclose(segs[0, 0], 0)
    p = write_glb(tmp_path / "x.glb", [(pts, cols)], [(segs, (1.0, 0.0, 0.0))])
    gltf, binary = read_glb(p)
    acc = gltf["accessors"]
    assert acc[0]["count"] == 50 and acc[0]["type"] == "VEC3"
    assert gltf["meshes"][0]["primitives"][0]["mode"] == 0  # POINTS
    assert gltf["meshes"][1]["primitives"][0]["mode"] == 1  # LINES
    view = gltf["bufferViews"][acc[0]["bufferView"]]
    back = np.frombuffer(binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]], np.float32).reshape(-1, 3)
    assert np.array_equal(back, pts)
    assert np.allclose(acc[0]["min"], pts.min(0))
    # a broken file is refused
    (tmp_path / "bad.glb").write_bytes(struct.pack("<III", 0, 2, 12))
    try:
        read_glb(tmp_path / "bad.glb")
    except ValueError as e:
        assert "bad.glb" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_published_rows():
    assert published_row("wan2.1-t2v-14b", "/data/co3d_ref") == (0.284, 0.151, 0.200, 0.736)
    assert published_row("fast3r", "/x/DL3DV-10K") == (1.379, 0.514, 0.134, 0.637)
    assert published_row("pixels", "/data/co3d") is None
    assert published_row("wan2.1-t2v-14b", "demo_out/data") is None


WAN_WEIGHTS = {"kind": "pretrained", "label": "pretrained Wan-AI/Wan2.1-T2V-14B@abc123", "model_id": "Wan-AI/Wan2.1-T2V-14B",
               "revision": "abc123", "source": "store manifest"}


def _fill(db_path, runs_root=None):
    """Three WAN cells (two layers on CO3D, two seeds of one; one DL3DV), a pixels run and a consistency run."""
    with ResultsDB(db_path) as db:
        spec = [("wan2.1-t2v-14b", 11, 42, "/data/co3d_ref", 0.05), ("wan2.1-t2v-14b", 21, 42, "/data/co3d_ref", 0.03),
                ("wan2.1-t2v-14b", 21, 43, "/data/co3d_ref", 0.04), ("wan2.1-t2v-14b", 21, 42, "/data/dl3dv", 0.12),
                ("pixels", 1, 42, "/data/co3d_ref", 0.09)]
        for bb, layer, seed, ds, pe in spec:
            name = f"{bb}-L{layer}-s{seed}-{ds.rsplit('/', 1)[-1]}"
            ck = None
            if runs_root is not None:
                ck = str(runs_root / name / "checkpoints" / "step_0000010")
            rid = db.add_run("probe", name=name, backbone=bb, dataset=ds, layer=layer,
                             timestep=749 if "wan" in bb else None, probe="tiny", seed=seed,
                             config={"a": layer, **({"weights": WAN_WEIGHTS} if "wan" in bb else {})},
                             checkpoint=ck, checkpoint_kind="last")
            db.add_metrics(rid, {"point_err": pe, "depth_err": 0.2, "auc_5": 0.1, "auc_30": 0.5, "abs_rel": 0.1,
                                 "rra_15": 0.5, "rta_15": 0.4}, ci={"point_err": (pe * 0.9, pe * 1.1)})
            db.add_clip_metrics(rid, [(f"c{i}", {"point_err": pe + 0.01 * i}) for i in range(5)])
            db.add_curve(rid, "loss", [(s, 1.0 / (s + 1)) for s in range(1, 20)])
            db.finish_run(rid)
        # a failed run never reaches the table
        db.add_run("probe", name="broken", backbone="fast3r", dataset="/data/co3d_ref", layer=1, status="failed")
        rid = db.add_run("consistency", name="wan-cons", backbone="wan2.1-t2v-14b", dataset="/data/co3d_ref", layer=21, timestep=749)
        db.add_metrics(rid, {"corr_err_px": 3.5})
        db.finish_run(rid)


def _write_clip(path, S=3, H=12, W=20, shift=0.0):
    """A saved evaluation clip with the keys `evaluate_run` writes."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]).expand(S, 3, 3).contiguous()
    E = torch.cat([torch.eye(3).expand(S, 3, 3), torch.zeros(S, 3, 1)], -1).contiguous()
    E[:, 0, 3] = torch.arange(S) * -0.1
    depth = 1 + torch.rand(S, H, W, generator=g)
    from vidprobe.geometry import depth_to_world_points

    pts = depth_to_world_points(depth, K, E)
    valid = torch.ones(S, H, W, dtype=torch.uint8)
    valid[:, 0, :] = 0
    t = {"images": torch.rand(S, 3, H, W, generator=g), "frames": torch.arange(S) * 5, "gt_points": pts,
         "gt_depth": depth, "gt_confidence": torch.ones(S, H, W), "valid": valid, "gt_extrinsics": E, "gt_intrinsics": K,
         "pred_points_aligned": pts + shift, "pred_depth": depth + shift, "pred_depth_conf": 1 + torch.rand(S, H, W, generator=g),
         "pred_extrinsics": E.clone(), "pred_intrinsics": K.clone()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path))
    return int(valid.sum())


def test_report_from_db(tmp_path):
    db_path = tmp_path / "r.db"
    _fill(db_path)
    paths = write_report(db_path, tmp_path / "rep", notice="weights were absent")
    html = paths["html"].read_text()
    md = paths["md"].read_text()
    assert "weights were absent" in html and "weights were absent" in md
    lines = md.splitlines()
    hdr = next(x for x in lines if x.startswith("| model | CO3Dv2 Point Err x10"))
    # published layout: both datasets as column groups, CO3D first
    assert "| DL3DV Point Err x10 | DL3DV Depth Err | DL3DV AUC@5 | DL3DV AUC@30 |" in hdr
    table = lines[lines.index(hdr) + 2 :]
    table = table[: next(i for i, x in enumerate(table) if not x.startswith("|"))]
    # one row per cell (+ a published row under each WAN row), grouped by weights (the pixels control apart,
    # inferred from its name in this DB without a weights field); seeds merge, the failed run is absent
    labels = [x.split("|")[1].strip() for x in table]
    w = " [weights: pretrained Wan-AI/Wan2.1-T2V-14B@abc123]"
    assert labels == ["**Pretrained models**", f"wan2.1-t2v-14b (L11, t749, tiny){w}", "*published: WAN2.1-14B*",
                      f"wan2.1-t2v-14b (L21, t749, tiny){w}", "*published: WAN2.1-14B*",
                      "**Controls (no pretrained model)**", "pixels (L1, tiny) [weights: control (pixels)]"]
    table = [x for x in table if not x.startswith("| **")]
    l11 = table[0].split("|")[2:-1]
    # one seed: x10 point error with its bootstrap interval; no DL3DV run for L11
    assert l11[0].strip() == "0.500 [0.450, 0.550]" and l11[4].strip() == "-"
    l21 = [c.strip() for c in table[2].split("|")[2:-1]]
    # two seeds on CO3D (0.03, 0.04): mean 0.35 x10 with a Student-t interval (12.706 * 0.05 / 1)
    assert l21[0].startswith("0.350 [") and l21[0].endswith("]")
    lo, hi = (float(x) for x in l21[0][7:-1].split(","))
    assert abs(lo - (0.35 - 12.706 * 0.0707107 / 1.41421)) < 1e-2 and abs(hi - (0.35 + 12.706 * 0.0707107 / 1.41421)) < 1e-2
    assert l21[4] == "1.200 [1.080, 1.320]"
    pub = [c.strip() for c in table[3].split("|")[2:-2]]
    assert pub == ["0.284", "0.151", "0.200", "0.736", "1.051", "0.323", "0.136", "0.660"]
    assert "mean of 2 seeds" in table[2] and "published: WAN2.1-14B" in html
    assert "1 seed: bootstrap interval over clips" in table[0] and "only 5 test clips (< 10)" in table[0]
    assert "control (pixels)" in md.split("## Benchmark")[0]  # the computed weights notice
    assert "fast3r" not in table[-1]
    for section in ("Training curves", "Per-clip error", "Radar chart", "heat map: wan2.1-t2v-14b", "Feature consistency vs probe error"):
        assert section in html, section
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html and "src='figures" not in html  # self-contained
    assert (tmp_path / "rep" / "figures" / "training_curves.png").stat().st_size > 1000
    assert "no run directory here" in md  # no run dirs were given


def test_report_without_consistency_or_grid(tmp_path):
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        rid = db.add_run("probe", name="only", backbone="pixels", dataset="/d/co3d", layer=1, probe="tiny", seed=1)
        db.add_metrics(rid, {"point_err": 0.1, "depth_err": 0.2}, ci={"point_err": (0.09, 0.11)})
        db.finish_run(rid)
    paths = write_report(db_path, tmp_path / "rep")
    html = paths["html"].read_text()
    assert "Feature consistency" not in html and "heat map" not in html and "Radar" not in html
    assert "1.000 [0.900, 1.100]" in html
    # AUC missing from the DB: a dash, not a number
    row = next(x for x in paths["md"].read_text().splitlines() if x.startswith("| pixels"))
    assert row.split("|")[4].strip() == "-"


def test_report_renders_clips_from_runs_root(tmp_path):
    db_path = tmp_path / "r.db"
    # the DB records run dirs under /nonexistent/...; the runs now live in tmp_path/moved
    _fill(db_path, runs_root=Path("/nonexistent/runs"))
    moved = tmp_path / "moved"
    name = "wan2.1-t2v-14b-L21-s42-co3d_ref"
    n_valid = _write_clip(moved / name / "eval_last" / "clips" / "seq_a.safetensors")
    (moved / name / "eval_last" / "clips" / "broken.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", str(db_path), "--out", str(out), "--runs-root", str(moved), "--clips-per-run", "5"])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "seq_a" in html and "Point clouds and cameras" in html and "Frames, depth and confidence" in html
    assert "could not render" in html and "broken.safetensors" in html  # the broken file is reported, not fatal
    glb = out / "clouds" / f"{name}_seq_a.glb"
    gltf, binary = read_glb(glb)
    counts = [gltf["accessors"][m["primitives"][0]["attributes"]["POSITION"]]["count"] for m in gltf["meshes"]]
    modes = [m["primitives"][0]["mode"] for m in gltf["meshes"]]
    # GT and predicted clouds (POINTS), GT and predicted frusta (LINES: 3 cameras x 8 segments x 2 vertices)
    assert modes == [0, 0, 1, 1] and counts == [n_valid, n_valid, 48, 48]
    assert len(binary) == gltf["buffers"][0]["byteLength"]
    pts, cols = read_ply(out / "clouds" / f"{name}_seq_a_gt.ply")
    assert pts.shape == (n_valid, 3) and cols.shape == (n_valid, 3)
    assert (out / "figures" / f"{name}_seq_a_cloud.png").exists()
    # a missing database is a clear error
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nope.db"), "--out", str(out)])
    assert r.exit_code == 2 and "nope.db" in r.output


_load()
