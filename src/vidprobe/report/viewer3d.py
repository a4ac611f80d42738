"""The report's interactive 3D viewer: saved evaluation clips as plotly figures, compared across runs.

For each clip that several runs saved (same video, same frames) there is one card per run: a rotatable 3D
scene with the GT points and the predicted points Sim(3)-aligned to them (the metric's own alignment,
``pred_points_aligned``), the GT cameras and the predicted cameras moved by that same Sim(3) (``pred_sim3``;
older clip files without it get it back from the two point maps with :func:`vidprobe.geometry.umeyama`),
and the predicted depth maps. Every scene of a clip has the same axis ranges, and a small inline script
links their cameras (``plotly_relayout``): rotating one scene rotates them all. All depth maps of a clip,
the GT strip included, share one colour scale (0 to the GT maximum) with a colour bar.

The page stays self-contained: plotly.js is embedded once (``include_plotlyjs=True`` on the first figure),
nothing is fetched. Points are subsampled (:data:`MAX_POINTS` per cloud), depth maps strided to at most
:data:`MAX_DEPTH_SIDE` pixels a side, and at most :data:`MAX_SCENES` scenes are drawn (a browser keeps
about 16 WebGL contexts alive).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_POINTS = 2000  # per cloud (GT and prediction use the same pixels)
MAX_SCENES = 12  # 3D scenes on one page; each holds a WebGL context
MAX_DEPTH_SIDE = 96  # depth maps are strided to at most this many pixels on their long side
MAX_FRAMES = 8
GT_COLOR, PRED_COLOR = "#d62728", "#1f77b4"  # as in the static renders: GT red, predicted blue
SCENE_HEIGHT = 380
CSS = (".v3d-grid{display:flex;flex-wrap:wrap;gap:8px}.v3d-card{border:1px solid #ddd;padding:4px;width:400px}"
       ".v3d-card h4{margin:2px 0;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}")
LINK_JS = """(function () {
  // each list holds the scene divs of one clip: a camera change in one is applied to the others
  var groups = %s;
  groups.forEach(function (ids) {
    var last = null;
    ids.forEach(function (id) {
      var gd = document.getElementById(id);
      if (!gd || !gd.on) return;
      var follow = function (ev) {
        var cam = ev && ev['scene.camera'];
        if (!cam) return;
        var key = JSON.stringify(cam);
        if (key === last) return;  // the echo of our own relayout
        last = key;
        ids.forEach(function (other) { if (other !== id) Plotly.relayout(other, {'scene.camera': cam}); });
      };
      gd.on('plotly_relayout', follow);
      gd.on('plotly_relayouting', follow);
    });
  });
})();"""


@dataclass
class ClipView:
    """One run's saved clip, reduced to what the viewer draws (numpy, world = the GT's normalised frame)."""

    run: str  # the run's label in the report
    clip: str  # the clip file's stem (the video)
    frames: tuple[int, ...]
    gt: np.ndarray  # [N,3] GT points (subsampled)
    pred: np.ndarray | None  # [N',3] Sim(3)-aligned predicted points at the same pixels (finite ones)
    gt_cams: np.ndarray  # [M,2,3] frustum segments
    pred_cams: np.ndarray | None
    cams_aligned: bool  # the predicted cameras were moved by the points' Sim(3)
    gt_depth: np.ndarray  # [S,h,w], NaN where GT is unknown
    pred_depth: np.ndarray | None

    @property
    def key(self) -> tuple:
        """Runs with the same key saw the same clip: same video, frames and GT (two datasets may share names)."""
        gt = np.nan_to_num(np.round(self.gt_depth.astype(np.float64), 3), nan=-1.0)
        return self.clip, self.frames, gt.shape, hashlib.sha1(gt.tobytes()).hexdigest()


def _sim3_matrix(t: dict, valid) -> np.ndarray | None:
    """The 4x4 ``x -> s R x + t`` that aligned the predicted points: stored by evaluation, or recovered."""
    import torch

    if "pred_sim3" in t:
        return t["pred_sim3"].double().numpy()
    if "pred_points" not in t or "pred_points_aligned" not in t:
        return None
    from vidprobe.geometry import umeyama

    src, dst = t["pred_points"][valid].double(), t["pred_points_aligned"][valid].double()
    ok = torch.isfinite(src).all(1) & torch.isfinite(dst).all(1)
    if int(ok.sum()) < 3:
        return None
    sim = umeyama(src[ok], dst[ok], with_scale=True)  # exact: the aligned map is this transform of the raw one
    m = np.eye(4)
    m[:3, :3] = float(sim.scale) * sim.rotation.numpy()
    m[:3, 3] = sim.translation.numpy()
    return m


def load_view(path: str | Path, run: str, max_points: int = MAX_POINTS) -> ClipView:
    """Read one ``clips/<clip>.safetensors`` written by :func:`vidprobe.pipeline.evaluate.evaluate_run`."""
    from safetensors.torch import load_file

    from vidprobe.report.export import frustum_lines

    path = Path(path)
    t = load_file(str(path))
    for key in ("gt_points", "gt_depth", "valid", "gt_extrinsics", "gt_intrinsics"):
        if key not in t:
            raise KeyError(f"{path}: missing tensor {key!r}")
    valid = t["valid"].bool()
    S, H, W = valid.shape
    gt_all = t["gt_points"][valid].double().numpy()
    idx = np.flatnonzero(np.isfinite(gt_all).all(1))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_points, replace=False))
    pred_key = "pred_points_aligned" if "pred_points_aligned" in t else "pred_points"
    pred = None
    if pred_key in t:
        pred = t[pred_key][valid].double().numpy()[idx]
        pred = pred[np.isfinite(pred).all(1)].astype(np.float32)
    gt_cams = frustum_lines(t["gt_extrinsics"], t["gt_intrinsics"], (H, W))
    pred_cams, aligned = None, False
    if "pred_extrinsics" in t:
        pred_cams = frustum_lines(t["pred_extrinsics"], t.get("pred_intrinsics", t["gt_intrinsics"]), (H, W)).astype(np.float64)
        sim = _sim3_matrix(t, valid)
        if sim is not None and np.isfinite(sim).all():
            pred_cams, aligned = pred_cams @ sim[:3, :3].T + sim[:3, 3], True
        pred_cams = pred_cams.astype(np.float32)
    st = max(1, math.ceil(max(H, W) / MAX_DEPTH_SIDE))
    gt_depth = np.where(valid.numpy(), t["gt_depth"].float().numpy(), np.nan)[:MAX_FRAMES, ::st, ::st]
    pred_depth = t["pred_depth"].float().numpy()[:MAX_FRAMES, ::st, ::st] if "pred_depth" in t else None
    frames = tuple(int(f) for f in t["frames"].tolist()) if "frames" in t else tuple(range(S))
    return ClipView(run, path.stem, frames, gt_all[idx].astype(np.float32), pred, gt_cams, pred_cams, aligned,
                    gt_depth.astype(np.float32), None if pred_depth is None else pred_depth.astype(np.float32))


def group_views(views: list[ClipView], max_scenes: int = MAX_SCENES) -> tuple[list[list[ClipView]], int]:
    """Views grouped by clip (same video and frames), the most shared clip first, cut to ``max_scenes``
    scenes in all (the first group always shows); returns ``(groups, views left out)``."""
    by: dict[tuple, list[ClipView]] = {}
    for v in views:
        by.setdefault(v.key, []).append(v)
    ordered = sorted(by.values(), key=lambda g: -len(g))  # stable: first-seen order among equals
    groups, n = [], 0
    for g in ordered:
        if n + len(g) > max_scenes:
            if not groups:
                groups.append(g[:max_scenes])
                n = max_scenes
            continue
        groups.append(g)
        n += len(g)
    return groups, len(views) - n


def scene_ranges(view: ClipView, pad: float = 0.15) -> list[tuple[float, float]]:
    """Axis ranges (drawn axes, :func:`shown`) from the GT points (1-99th percentile) and the GT cameras, padded;
    shared by a clip's scenes."""
    pts = [shown(view.gt_cams.reshape(-1, 3))]
    if len(view.gt):
        pts.append(np.percentile(shown(view.gt), [1, 99], axis=0))
    allp = np.concatenate(pts).astype(np.float64)
    lo, hi = allp.min(0), allp.max(0)
    span = float(np.max(hi - lo)) or 1.0
    return [(float(a - pad * span), float(b + pad * span)) for a, b in zip(lo, hi)]


def shown(p: np.ndarray) -> np.ndarray:
    """OpenCV world ``(x, y down, z forward)`` as drawn: ``(x, z, -y)``, so the plot's z axis points up."""
    p = np.asarray(p)
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], -1)


def typed(a: np.ndarray) -> dict:
    """A float32 array as a plotly.js typed-array spec (base64): a quarter of the size of JSON numbers."""
    a = np.ascontiguousarray(a, dtype="<f4")
    spec = {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode("ascii")}
    if a.ndim > 1:
        spec["shape"] = ", ".join(map(str, a.shape))
    return spec


def _turbo(n: int = 11) -> list:
    """matplotlib's turbo (the static depth panels' colour map) as a plotly colour scale."""
    from matplotlib import colormaps

    cm = colormaps["turbo"]
    return [[i / (n - 1), "rgb({},{},{})".format(*(round(255 * c) for c in cm(i / (n - 1))[:3]))] for i in range(n)]


def _lines(segs: np.ndarray, name: str, color: str) -> dict:
    """Frustum segments as one line trace (segments separated by gaps)."""
    xyz: list[list[float | None]] = [[], [], []]
    for seg in shown(np.asarray(segs, np.float64)):
        for k in range(3):
            xyz[k] += [round(float(seg[0, k]), 4), round(float(seg[1, k]), 4), None]
    return {"type": "scatter3d", "x": xyz[0], "y": xyz[1], "z": xyz[2], "mode": "lines", "name": name,
            "line": {"color": color, "width": 3}, "hoverinfo": "name"}


def scene_figure(view: ClipView, ranges: list[tuple[float, float]]) -> dict:
    """GT and predicted points and cameras in one rotatable scene, drawn with the scene's up (-y) as the plot's z."""

    def cloud(p, name, color):
        p = shown(p)
        return {"type": "scatter3d", "x": typed(p[:, 0]), "y": typed(p[:, 1]), "z": typed(p[:, 2]), "mode": "markers",
                "name": name, "hoverinfo": "skip", "marker": {"size": 1.6, "color": color}}

    traces = [cloud(view.gt, "GT points", GT_COLOR)]
    if view.pred is not None:
        traces.append(cloud(view.pred, "predicted points (Sim(3)-aligned)", PRED_COLOR))
    traces.append(_lines(view.gt_cams, "GT cameras", GT_COLOR))
    if view.pred_cams is not None:
        traces.append(_lines(view.pred_cams, "predicted cameras" + ("" if view.cams_aligned else " (not aligned)"),
                             PRED_COLOR))
    spans = [hi - lo for lo, hi in ranges]
    ratio = {k: s / max(spans) for k, s in zip("xyz", spans)}
    axes = {f"{k}axis": {"range": list(r), "title": {"text": t}, "showspikes": False}
            for k, r, t in zip("xyz", ranges, ("x (right)", "z (forward)", "-y (up)"))}
    camera = {"up": {"x": 0, "y": 0, "z": 1}, "center": {"x": 0, "y": 0, "z": 0},
              "eye": {"x": 0.5, "y": -1.7, "z": 0.9}}  # behind the first camera, above
    layout = {"height": SCENE_HEIGHT, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
              "legend": {"orientation": "h", "x": 0, "y": 0, "font": {"size": 9}, "bgcolor": "rgba(255,255,255,0.6)"},
              "meta": {"vidprobe": "scene", "run": view.run, "clip": view.clip},
              "scene": {**axes, "aspectmode": "manual", "aspectratio": ratio, "dragmode": "turntable", "camera": camera}}
    return {"data": traces, "layout": layout}


def depth_figure(depth: np.ndarray, frames: tuple[int, ...], zmax: float, role: str, run: str) -> dict:
    """One strip of depth maps (frames side by side) on a fixed colour scale ``[0, zmax]`` with its colour bar."""
    S, h, w = depth.shape
    gap = max(1, w // 16)
    z = np.full((h, S * w + (S - 1) * gap), np.nan, np.float32)
    for i in range(S):
        z[:, i * (w + gap): i * (w + gap) + w] = depth[i]
    hm = {"type": "heatmap", "z": typed(z), "coloraxis": "coloraxis", "hovertemplate": "depth %{z:.3f}<extra></extra>"}
    width_px = 330  # the plot area of a card, less the colour bar
    bare = {"showgrid": False, "zeroline": False, "ticks": ""}
    layout = {"height": int(30 + width_px * h / z.shape[1]) + 24, "margin": {"l": 4, "r": 4, "t": 4, "b": 24},
              "meta": {"vidprobe": "depth", "role": role, "run": run},
              "coloraxis": {"cmin": 0.0, "cmax": float(zmax), "colorscale": _turbo(),
                            "colorbar": {"title": {"text": "depth", "side": "right"}, "thickness": 10, "len": 1.0}},
              "xaxis": {**bare, "tickvals": [i * (w + gap) + (w - 1) / 2 for i in range(S)],
                        "ticktext": [f"{role} f{f}" for f in frames[:S]], "tickfont": {"size": 9}},
              "yaxis": {**bare, "autorange": "reversed", "scaleanchor": "x", "showticklabels": False}}
    return {"data": [hm], "layout": layout}


def _div(fig: dict, div_id: str, first: bool) -> str:
    """The figure as an HTML fragment; the first one of the page carries plotly.js itself (offline)."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=first, div_id=div_id, default_height=None,
                       validate=False, config={"displaylogo": False, "responsive": True})


INTRO = ("Drag to rotate, scroll to zoom; every scene of a clip follows the same camera, so the backbones compare "
         "from one viewpoint. Red: ground truth (normalised: first camera at the origin, mean point distance 1); "
         "blue: the prediction, Sim(3)-aligned to the GT points exactly as Point Err aligns it, its cameras moved by "
         "the same transform. Points are a random subsample of {n} pixels. Depth maps share one colour scale "
         "(0 to the GT maximum) across the GT strip and every backbone; pixels without GT depth are blank in the GT "
         "strip. Click a legend entry to hide a trace.")


def viewer_section(items: list[tuple[str, Path]]) -> tuple[list[str], list[str]]:
    """HTML and Markdown lines of the viewer for ``(run label, clip file)`` pairs; nothing without clips."""
    if not items:
        return [], []
    try:
        import plotly  # noqa: F401
    except ImportError:
        msg = ("Interactive 3D viewer left out: the plotly package is not installed here "
               "(`pip install plotly`, a dependency of vidprobe). The static renders below show the same clips.")
        return [f"<h2>Interactive 3D viewer</h2><p class='notice'>{html.escape(msg)}</p>"], ["## Interactive 3D viewer", "", msg, ""]
    views, errors = [], []
    for run, path in items:
        try:
            views.append(load_view(path, run))
        except Exception as e:  # noqa: BLE001 - a broken clip file is named, not fatal
            errors.append(f"{path}: {type(e).__name__}: {e}")
    groups, left_out = group_views(views)
    H = [f"<h2>Interactive 3D viewer</h2><style>{CSS}</style><p>{html.escape(INTRO.format(n=MAX_POINTS))}</p>"]
    M = ["## Interactive 3D viewer", ""]
    links: list[list[str]] = []
    for gi, group in enumerate(groups):
        ranges = scene_ranges(group[0])
        gt = group[0].gt_depth
        zmax = float(np.nanmax(gt)) if np.isfinite(gt).any() else 1.0
        desc = f"clip {group[0].clip}, frames {', '.join(map(str, group[0].frames))}: {len(group)} run(s)"
        H.append(f"<h3>{html.escape(desc)}</h3>")
        H += ["<div class='v3d-card'><h4>ground truth depth</h4>",
              _div(depth_figure(gt, group[0].frames, zmax, "GT", "ground truth"), f"v3d-gt{gi}", gi == 0), "</div>"]
        H.append("<div class='v3d-grid'>")
        ids = []
        for vi, v in enumerate(group):
            sid = f"v3d-s{gi}-{vi}"
            ids.append(sid)
            H += [f"<div class='v3d-card'><h4 title='{html.escape(v.run)}'>{html.escape(v.run)}</h4>",
                  _div(scene_figure(v, ranges), sid, False)]
            if v.pred_depth is not None:
                H.append(_div(depth_figure(v.pred_depth, v.frames, zmax, "pred", v.run), f"v3d-d{gi}-{vi}", False))
            H.append("</div>")
        H.append("</div>")
        links.append(ids)
        M.append(f"- {desc} (interactive in report.html)")
    notes = []
    if left_out:
        notes.append(f"{left_out} saved clip(s) not shown here (at most {MAX_SCENES} 3D scenes on a page, the most "
                     "shared clip first); the static renders below show them.")
    notes += [f"could not load {e}" for e in errors]
    for n in notes:
        H.append(f"<p>{html.escape(n)}</p>")
    M += ["", *notes, ""] if notes else [""]
    if links:
        H.append(f"<script>{LINK_JS % json.dumps(links)}</script>")
    return H, M
