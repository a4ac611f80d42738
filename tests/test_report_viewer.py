"""The report's interactive 3D viewer (issue 15): what evaluation saves for it, what it draws, and, in headless
Chromium, that it renders offline, shares one camera across the backbones' scenes and one depth colour scale."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch

from vidprobe.geometry import invert_extrinsics
from vidprobe.results import ResultsDB

S, H, W = 3, 12, 20
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def _gt(gain: float = 1.0):
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]], dtype=torch.float64).expand(S, 3, 3).contiguous()
    E = torch.cat([torch.eye(3, dtype=torch.float64).expand(S, 3, 3), torch.zeros(S, 3, 1, dtype=torch.float64)], -1)
    E[:, 0, 3] = torch.arange(S) * -0.3
    depth = gain * (1 + torch.rand(S, H, W, generator=g, dtype=torch.float64))
    from vidprobe.geometry import depth_to_world_points

    valid = torch.ones(S, H, W, dtype=torch.bool)
    valid[:, 0, :] = False
    return {"points": depth_to_world_points(depth, K, E), "depth": depth, "confidence": torch.ones(S, H, W),
            "valid": valid, "extrinsics": E, "intrinsics": K}


def _save_evaluated_clip(which_dir, name="seq_a", scale=1.5, noise=0.0, depth_gain=1.0, gt_gain=1.0):
    """A clip saved by evaluation's own writer: the prediction is the GT seen through the inverse of a known
    Sim(3) (points and cameras), plus noise; the alignment is the metric's."""
    from vidprobe.metrics.points import point_errors
    from vidprobe.pipeline.evaluate import _save_clip

    tgt = _gt(gt_gain)
    R, t = _rot_y(25.0), torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    inv = lambda x: ((x - t) @ R) / scale  # noqa: E731 - the inverse of x -> s R x + t
    g = torch.Generator().manual_seed(1)
    pred_pts = inv(tgt["points"]) + noise * torch.randn(S, H, W, 3, generator=g, dtype=torch.float64)
    c2w = invert_extrinsics(tgt["extrinsics"])
    c2w_pred = torch.cat([R.T @ c2w[:, :, :3], inv(c2w[:, :, 3])[..., None]], -1)
    pred_ext = invert_extrinsics(c2w_pred)
    pe = point_errors(pred_pts.float(), tgt["points"].float(), tgt["confidence"], tgt["valid"])
    pred = {"points": pred_pts.float(), "depth": (tgt["depth"] * depth_gain).float(),
            "depth_conf": torch.ones(S, H, W)}
    images = torch.rand(S, 3, H, W, generator=g)
    return _save_clip(which_dir, name, [0, 5, 10], pred, {k: v.float() if v.is_floating_point() else v for k, v in tgt.items()},
                      images, pe.aligned, pred_ext.float(), tgt["intrinsics"].float(), {"video": name}, sim=pe.sim3)


def test_saved_clip_carries_the_metric_alignment_and_the_viewer_applies_it_to_the_cameras(tmp_path):
    from safetensors.torch import load_file, save_file

    from vidprobe.report.export import frustum_lines
    from vidprobe.report.viewer3d import load_view

    path = _save_evaluated_clip(tmp_path / "eval_last", scale=1.5)
    t = load_file(str(path))
    M = t["pred_sim3"].double()
    assert M.shape == (4, 4) and abs(float(torch.linalg.det(M[:3, :3])) - 1.5 ** 3) < 1e-3  # the known scale
    back = t["pred_points"].double() @ M[:3, :3].T + M[:3, 3]
    assert torch.allclose(back, t["pred_points_aligned"].double(), atol=1e-4)
    gt_centres = frustum_lines(t["gt_extrinsics"], t["gt_intrinsics"], (H, W))[::2, 0]
    v = load_view(path, "run a", max_points=50)
    assert v.cams_aligned and len(v.gt) == 50 and v.pred.shape == (50, 3)
    assert np.allclose(v.pred, v.gt, atol=1e-3)  # noise-free: the aligned prediction is the truth
    assert np.allclose(v.pred_cams[::2, 0], gt_centres, atol=1e-3)  # the predicted cameras land on the GT ones
    assert not np.allclose(frustum_lines(t["pred_extrinsics"], t["pred_intrinsics"], (H, W))[::2, 0], gt_centres, atol=0.05)
    assert np.isnan(v.gt_depth[:, 0]).all() and np.isfinite(v.gt_depth[:, 1:]).all()  # no GT: blank
    # a clip file from before pred_sim3 was saved: the same transform is recovered from the two point maps
    del t["pred_sim3"]
    save_file(t, str(tmp_path / "old.safetensors"))
    old = load_view(tmp_path / "old.safetensors", "run a", max_points=50)
    assert old.cams_aligned and np.allclose(old.pred_cams, v.pred_cams, atol=1e-3)


def test_groups_share_a_clip_and_stay_within_the_scene_budget(tmp_path):
    from vidprobe.report.viewer3d import group_views, load_view

    a = _save_evaluated_clip(tmp_path / "a", "seq_a")
    b = _save_evaluated_clip(tmp_path / "b", "seq_b")
    views = [load_view(a, f"r{i}") for i in range(3)] + [load_view(b, "r9")]
    other = load_view(_save_evaluated_clip(tmp_path / "c", "seq_a", gt_gain=2.0), "elsewhere")
    groups, _ = group_views([*views, other])  # same clip name and frames, other data: not one group
    assert [[v.run for v in g] for g in groups] == [["r0", "r1", "r2"], ["r9"], ["elsewhere"]]
    groups, left = group_views(views, max_scenes=3)
    assert [[v.run for v in g] for g in groups] == [["r0", "r1", "r2"]] and left == 1
    groups, left = group_views(views, max_scenes=2)  # the first group is cut, never dropped
    assert [[v.run for v in g] for g in groups] == [["r0", "r1"]] and left == 2
    groups, left = group_views(views, max_scenes=12)
    assert [len(g) for g in groups] == [3, 1] and left == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A results DB with two evaluated runs (different predictions) on the same saved clip; the report written."""
    from vidprobe.report.html import write_report

    tmp_path = tmp_path_factory.mktemp("viewer")
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        for name, noise, gain in (("alpha", 0.0, 1.0), ("beta", 0.05, 1.3)):
            rd = tmp_path / "runs" / name
            _save_evaluated_clip(rd / "eval_last", "seq_a", noise=noise, depth_gain=gain)
            rid = db.add_run("probe", name=name, backbone=name, dataset="/data/synthetic", layer=1, probe="tiny", seed=1,
                             checkpoint=str(rd / "checkpoints" / "step_0000010"), checkpoint_kind="last")
            db.add_metrics(rid, {"point_err": 0.1 + noise, "depth_err": 0.2})
            db.finish_run(rid)
    return write_report(db_path, tmp_path / "rep")


def test_report_embeds_the_viewer_once_offline(report):
    paths = report
    html = paths["html"].read_text()
    assert "Interactive 3D viewer" in html and "Interactive 3D viewer" in paths["md"].read_text()
    assert html.count("plotly.js v") == 1  # the library, once
    assert "cdn.plot.ly/plotly" not in html and "<script src=" not in html
    for i in range(2):
        assert f'id="v3d-s0-{i}"' in html and f'id="v3d-d0-{i}"' in html
    assert '"v3d-s0-0", "v3d-s0-1"' in html  # the camera link of the clip's scenes


def test_report_without_plotly_says_so(tmp_path, monkeypatch):
    import builtins

    from vidprobe.report.viewer3d import viewer_section

    clip = _save_evaluated_clip(tmp_path / "eval_last")

    real = builtins.__import__

    def no_plotly(name, *a, **k):
        if name == "plotly" or name.startswith("plotly."):
            raise ImportError("no plotly here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    H, M = viewer_section([("run a", clip)])
    assert "viewer left out: the plotly package is not installed" in " ".join(H) and "plotly" in " ".join(M)
    assert "Plotly.newPlot" not in " ".join(H)
    monkeypatch.setattr(builtins, "__import__", real)
    assert "Plotly.newPlot" in " ".join(viewer_section([("run a", clip)])[0])


def _chromium() -> str | None:
    return os.environ.get("VIDPROBE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def browser(tmp_path):
    """A headless Chromium page (Playwright driving the system browser); skipped when either is absent."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright): the browser test of the report is skipped")
    exe = _chromium()
    if exe and not os.access(exe, os.X_OK):
        pytest.skip(f"VIDPROBE_CHROMIUM={exe} is not an executable: browser test skipped")
    if not exe:
        pytest.skip("no chromium executable (apt-get install chromium, or set VIDPROBE_CHROMIUM): browser test skipped")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe, headless=True,
                                                   args=FLAGS, viewport={"width": 1300, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


def _camera(page, div: str) -> dict:
    return page.evaluate(f"() => JSON.parse(JSON.stringify(document.getElementById('{div}').layout.scene.camera))")


@pytest.mark.slow  # ~10 s: a browser start and a 5 MB page
def test_viewer_in_headless_chromium(report, browser):
    paths = report
    requests, errors = [], []
    browser.on("request", lambda r: requests.append(r.url))
    page = browser.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(paths["html"].as_uri())
    page.wait_for_function("() => ['v3d-s0-0', 'v3d-s0-1'].every(id => { const g = document.getElementById(id);"
                           " return g && g._fullLayout && g._fullLayout.scene && g._fullLayout.scene._scene; })",
                           timeout=90_000)
    # both 3D scenes exist (a WebGL canvas each) with GT / predicted points and cameras
    for sid in ("v3d-s0-0", "v3d-s0-1"):
        info = page.evaluate(f"""() => {{ const g = document.getElementById('{sid}');
            return {{canvas: g.querySelectorAll('.gl-container canvas').length,
                     names: g.data.map(d => d.name), lens: g._fullData.map(d => d.x.length)}}; }}""")
        assert info["canvas"] >= 1, sid
        assert info["names"] == ["GT points", "predicted points (Sim(3)-aligned)", "GT cameras", "predicted cameras"]
        assert info["lens"][0] > 100 and info["lens"][1] > 100 and info["lens"][2] == info["lens"][3] == S * 8 * 3
    before = [_camera(page, s) for s in ("v3d-s0-0", "v3d-s0-1")]
    assert before[0] == before[1]
    page.locator("#v3d-s0-0").scroll_into_view_if_needed()
    box = page.locator("#v3d-s0-0").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 40, steps=8)
    page.mouse.up()
    page.wait_for_timeout(500)
    after = [_camera(page, s) for s in ("v3d-s0-0", "v3d-s0-1")]
    assert after[0]["eye"] != before[0]["eye"], "the drag did not rotate the scene"
    assert after[1]["eye"] != before[1]["eye"], "the other backbone's scene did not follow"
    for k in ("x", "y", "z"):
        assert after[1]["eye"][k] == pytest.approx(after[0]["eye"][k], abs=1e-6)
    # depth maps: a colour bar on each, one range for the GT strip and both backbones (0 to the GT maximum)
    bars = page.evaluate("""() => ['v3d-gt0', 'v3d-d0-0', 'v3d-d0-1'].map(id => { const g = document.getElementById(id);
        return [g._fullLayout.coloraxis.cmin, g._fullLayout.coloraxis.cmax, g.querySelectorAll('.colorbar').length,
                g.querySelectorAll('.colorbar .cbaxis text, .colorbar text').length]; })""")
    gt_max = float(_gt()["depth"][_gt()["valid"]].max())
    for cmin, cmax, n_bar, n_text in bars:
        assert cmin == 0 and cmax == pytest.approx(gt_max, rel=1e-5) and n_bar == 1 and n_text >= 2
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(("file://", "data:", "blob:", "about:"))]
    assert requests and not outside, outside
