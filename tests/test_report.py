import json
import struct

import numpy as np
import torch

from vidprobe.report.export import frustum_lines, read_glb, write_glb
from vidprobe.report.html import write_report
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


def _fill(db_path):
    with ResultsDB(db_path) as db:
        for bb, layer, pe in [("wan2.1-t2v-14b", 11, 0.05), ("wan2.1-t2v-14b", 21, 0.03), ("pixels", 1, 0.09)]:
            rid = db.add_run("probe", name=f"{bb}-{layer}", backbone=bb, dataset="/data/co3d_ref", layer=layer,
                             timestep=749 if "wan" in bb else None, probe="tiny", seed=42, config={"a": layer})
            db.add_metrics(rid, {"point_err": pe, "depth_err": 0.2, "auc_5": 0.1, "auc_30": 0.5, "abs_rel": 0.1,
                                 "rra_15": 0.5, "rta_15": 0.4}, ci={"point_err": (pe * 0.9, pe * 1.1)})
            db.add_clip_metrics(rid, [(f"c{i}", {"point_err": pe + 0.01 * i}) for i in range(5)])
            db.add_curve(rid, "loss", [(s, 1.0 / (s + 1)) for s in range(1, 20)])
            db.finish_run(rid)
        rid = db.add_run("consistency", name="wan-cons", backbone="wan2.1-t2v-14b", dataset="/data/co3d_ref", layer=21, timestep=749)
        db.add_metrics(rid, {"corr_err_px": 3.5})
        db.finish_run(rid)


def test_report_from_db(tmp_path):
    db_path = tmp_path / "r.db"
    _fill(db_path)
    paths = write_report(db_path, tmp_path / "rep", notice="weights were absent")
    html = paths["html"].read_text()
    md = paths["md"].read_text()
    assert "weights were absent" in html and "weights were absent" in md
    # benchmark table: x10 point error with its interval, and the published numbers alongside
    assert "0.300 [0.270, 0.330]" in html
    assert "0.284 / 0.151 / 0.200 / 0.736" in md
    assert "| pixels (L1, s42) |" in md
    for section in ("Training curves", "Per-clip error", "Radar chart", "heat map: wan2.1-t2v-14b", "Feature consistency vs probe error"):
        assert section in html, section
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html  # self-contained
    assert (tmp_path / "rep" / "figures").is_dir()
