"""`vidprobe report RESULTS.db`: a self-contained HTML page plus Markdown.

Sections: the benchmark table in the published layout (with the published
numbers alongside where a backbone matches a published model), a layer x
timestep heat map when a backbone has several cells, a radar chart across
metrics, training curves, per-clip error histograms, feature consistency vs
probe error (when consistency runs exist), and for a few clips per run:
input frames with GT / predicted depth and confidence, point clouds with
camera frusta as PNG renders plus PLY and GLB files.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vidprobe.atomic import atomic_write_text  # noqa: E402
from vidprobe.report.published import PUBLISHED, published_row  # noqa: E402

TABLE = [  # (metric, header, scale, lower is better)
    ("point_err", "Point Err x10", 10.0, True),
    ("depth_err", "Depth Err", 1.0, True),
    ("auc_5", "AUC@5", 1.0, False),
    ("auc_30", "AUC@30", 1.0, False),
]
RADAR = ["point_err", "depth_err", "abs_rel", "auc_5", "auc_30", "rra_15", "rta_15"]
LOWER_BETTER = {"point_err", "point_err_unweighted", "depth_err", "abs_rel", "rmse", "corr_err_px"}


def _png(fig) -> str:
    b = io.BytesIO()
    fig.savefig(b, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(b.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _fmt(v, scale=1.0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.3f}"


def _run_label(r: dict) -> str:
    lab = r.get("backbone") or r.get("name") or f"run {r['run_id']}"
    extra = []
    if r.get("layer") is not None:
        extra.append("Llast" if r["layer"] == -1 else f"L{r['layer']}")
    if r.get("timestep") is not None:
        extra.append(f"t{r['timestep']}")
    if r.get("seed") is not None:
        extra.append(f"s{r['seed']}")
    return f"{lab} ({', '.join(extra)})" if extra else lab


def load_runs(db_path: Path, split: str = "test") -> list[dict]:
    from vidprobe.results import ResultsDB

    out = []
    with ResultsDB(db_path) as db:
        for r in db.runs(status="done", kind="probe"):
            rows = {m["metric"]: m for m in db.metric_rows(r["run_id"], split=split, scope="aggregate")}
            r["metrics"] = {k: v["value"] for k, v in rows.items()}
            r["ci"] = {k: (v["ci_low"], v["ci_high"]) for k, v in rows.items()}
            r["curves"] = {n: db.curve(r["run_id"], n) for n in db.curve_names(r["run_id"])}
            r["clips"] = db.clip_metrics(r["run_id"], "point_err", split=split)
            out.append(r)
        consistency = [
            {**r, "metrics": db.get_metrics(r["run_id"], split=split)} for r in db.runs(status="done", kind="consistency")
        ]
    return out + [dict(c, kind="consistency") for c in consistency]


def benchmark_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for r in runs:
        if r.get("kind") != "probe":
            continue
        row = {"label": _run_label(r), "backbone": r.get("backbone"), "dataset": r.get("dataset")}
        for m, _, scale, _ in TABLE:
            v = r["metrics"].get(m)
            lo, hi = r["ci"].get(m, (None, None))
            row[m] = _fmt(v, scale) + ("" if lo is None or hi is None else f" [{_fmt(lo, scale)}, {_fmt(hi, scale)}]")
        pub = published_row(r.get("backbone"), r.get("dataset"))
        row["published"] = pub
        rows.append(row)
    return rows


def fig_curves(runs):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in runs:
        c = r.get("curves", {}).get("loss")
        if c:
            s, v = zip(*[(a, b) for a, b in c if b is not None])
            ax.plot(s, v, label=_run_label(r), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Training curves")
    return fig


def fig_hist(runs):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in runs:
        vals = [v for v in r.get("clips", {}).values() if v is not None]
        if vals:
            ax.hist(vals, bins=15, alpha=0.45, label=_run_label(r))
    ax.set_xlabel("per-clip Point Err (raw)")
    ax.set_ylabel("clips")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Per-clip error")
    return fig


def fig_radar(runs):
    names = [m for m in RADAR if any(r["metrics"].get(m) is not None for r in runs)]
    if len(names) < 3:
        return None
    vals = np.array([[r["metrics"].get(m) if r["metrics"].get(m) is not None else np.nan for m in names] for r in runs], float)
    # normalise each axis to [0,1] where 1 is best
    lo, hi = np.nanmin(vals, 0), np.nanmax(vals, 0)
    norm = (vals - lo) / np.where(hi - lo > 0, hi - lo, 1)
    for j, m in enumerate(names):
        if m in LOWER_BETTER:
            norm[:, j] = 1 - norm[:, j]
    ang = np.linspace(0, 2 * np.pi, len(names), endpoint=False).tolist()
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(111, polar=True)
    for r, row in zip(runs, norm):
        row = np.nan_to_num(row)
        ax.plot(ang + ang[:1], list(row) + [row[0]], lw=1, label=_run_label(r))
    ax.set_xticks(ang)
    ax.set_xticklabels(names, fontsize=7)
    ax.set_yticklabels([])
    ax.legend(fontsize=6, loc="upper right", bbox_to_anchor=(1.45, 1.1))
    ax.set_title("Across metrics (outer = best of these runs)", fontsize=9)
    return fig


def fig_heatmaps(runs):
    by_bb: dict[str, list[dict]] = {}
    for r in runs:
        by_bb.setdefault(r.get("backbone") or "?", []).append(r)
    figs = []
    for bb, rs in by_bb.items():
        layers = sorted({r["layer"] for r in rs if r.get("layer") is not None})
        ts = sorted({r["timestep"] for r in rs if r.get("timestep") is not None})
        if len(layers) * max(1, len(ts)) < 2 or len(rs) < 2:
            continue
        ts = ts or [None]
        grid = np.full((len(layers), len(ts)), np.nan)
        for r in rs:
            if r.get("layer") in layers and r.get("timestep") in ts and r["metrics"].get("point_err") is not None:
                grid[layers.index(r["layer"]), ts.index(r["timestep"])] = r["metrics"]["point_err"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(ts), 1 + 0.45 * len(layers)))
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(ts)), [str(t) for t in ts])
        ax.set_yticks(range(len(layers)), [str(l_) for l_ in layers])
        ax.set_xlabel("timestep")
        ax.set_ylabel("layer")
        ax.set_title(f"{bb}: Point Err", fontsize=9)
        fig.colorbar(im, ax=ax)
        figs.append((bb, fig))
    return figs


def fig_consistency(runs):
    cons = {(r.get("backbone"), r.get("layer"), r.get("timestep")): r for r in runs if r.get("kind") == "consistency"}
    pts = []
    for r in runs:
        if r.get("kind") != "probe":
            continue
        c = cons.get((r.get("backbone"), r.get("layer"), r.get("timestep")))
        if c and c["metrics"].get("corr_err_px") is not None and r["metrics"].get("point_err") is not None:
            pts.append((c["metrics"]["corr_err_px"], r["metrics"]["point_err"], _run_label(r)))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for x, y, lab in pts:
        ax.scatter(x, y)
        ax.annotate(lab, (x, y), fontsize=6)
    ax.set_xlabel("correspondence error (px)")
    ax.set_ylabel("probe Point Err")
    ax.set_title("Feature consistency vs probe error")
    return fig


def clip_figures(clip_file: Path, out_dir: Path, tag: str) -> tuple[list[tuple[str, str]], dict]:
    """Depth/confidence panel and point-cloud render of one saved clip; also writes its GLB."""
    from safetensors.torch import load_file

    from vidprobe.report.export import frustum_lines, write_glb

    t = load_file(str(clip_file))
    imgs = t["images"]  # [S,3,H,W]
    S = imgs.shape[0]
    valid = t["valid"].bool()
    rows = [("input", [im.permute(1, 2, 0).numpy() for im in imgs], None)]
    rows.append(("GT depth", [d.numpy() for d in t["gt_depth"]], "turbo"))
    if "pred_depth" in t:
        rows.append(("pred depth", [d.numpy() for d in t["pred_depth"]], "turbo"))
    if "pred_depth_conf" in t:
        rows.append(("pred depth conf", [d.numpy() for d in t["pred_depth_conf"]], "magma"))
    fig, axes = plt.subplots(len(rows), S, figsize=(2.0 * S, 1.25 * len(rows)), squeeze=False)
    for i, (name, ims, cmap) in enumerate(rows):
        vmax = max(float(np.nanmax(x)) for x in ims) if cmap else None
        for j in range(S):
            ax = axes[i][j]
            ax.imshow(ims[j], cmap=cmap, vmin=0 if cmap else None, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    panel = _png(fig)

    gt = t["gt_points"][valid].numpy()
    pred_key = "pred_points_aligned" if "pred_points_aligned" in t else "pred_points"
    pred = t[pred_key][valid].numpy() if pred_key in t else None
    cols = (imgs.permute(0, 2, 3, 1)[valid].numpy() * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(gt), size=min(len(gt), 4000), replace=False) if len(gt) else np.zeros(0, int)
    hw = tuple(imgs.shape[-2:])
    fr_gt = frustum_lines(t["gt_extrinsics"], t["gt_intrinsics"], hw)
    fig = plt.figure(figsize=(8, 4))
    for k, (name, P, fr) in enumerate([("ground truth", gt, fr_gt), ("prediction (Sim(3)-aligned)", pred, None)]):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        if P is not None and len(idx):
            ax.scatter(P[idx, 0], P[idx, 2], -P[idx, 1], c=cols[idx] / 255.0, s=1, depthshade=False)
        if fr is not None:
            for seg in fr:
                ax.plot(seg[:, 0], seg[:, 2], -seg[:, 1], c="red", lw=0.6)
        if "pred_extrinsics" in t and k == 1:
            for seg in frustum_lines(t["pred_extrinsics"], t.get("pred_intrinsics", t["gt_intrinsics"]), hw):
                ax.plot(seg[:, 0], seg[:, 2], -seg[:, 1], c="blue", lw=0.6)
        ax.set_title(name, fontsize=8)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
    cloud = _png(fig)
    out_dir.mkdir(parents=True, exist_ok=True)
    clouds = [(gt, cols)]
    lines = [(fr_gt, (1.0, 0.0, 0.0))]
    if pred is not None:
        clouds.append((pred + np.array([0, 0, 0], np.float32), np.full_like(cols, 80) + (cols // 2)))
    if "pred_extrinsics" in t:
        lines.append((frustum_lines(t["pred_extrinsics"], t.get("pred_intrinsics", t["gt_intrinsics"]), hw), (0.0, 0.3, 1.0)))
    glb = write_glb(out_dir / f"{tag}.glb", clouds, lines)
    return [("Frames, depth and confidence", panel), ("Point clouds and cameras (GT red, predicted blue)", cloud)], {"glb": glb}


def write_report(db_path: str | Path, out_dir: str | Path, notice: str | None = None, split: str = "test",
                 clips_per_run: int = 1, title: str = "vidprobe report") -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``out_dir``; returns their paths."""
    db_path, out_dir = Path(db_path), Path(out_dir)
    if not db_path.exists():
        raise FileNotFoundError(f"results database not found: {db_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    allruns = load_runs(db_path, split)
    runs = [r for r in allruns if r.get("kind") == "probe"]
    rows = benchmark_rows(runs)
    H: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#eee}td:first-child{text-align:left}.notice{background:#fff3cd;border:1px solid #e0c060;padding:.7em}"
        "img{max-width:100%}h2{border-bottom:1px solid #ddd}.pub{color:#777}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Results database: <code>{html.escape(str(db_path))}</code> &middot; split: {html.escape(split)} &middot; {len(runs)} probe runs</p>",
    ]
    M: list[str] = [f"# {title}", "", f"Results database: `{db_path}`, split `{split}`, {len(runs)} probe runs.", ""]
    if notice:
        H.append(f"<p class='notice'><b>Read this first.</b> {html.escape(notice)}</p>")
        M += [f"> **Read this first.** {notice}", ""]
    # benchmark table
    hdr = ["model", *[h for _, h, _, _ in TABLE], "published (same metrics)"]
    H.append("<h2>Benchmark</h2><p>Values with bootstrap 95% intervals over clips. Point Err is the reference "
             "definition (Sim(3) fit on top-25% confidence pixels, confidence-weighted) x10.</p><table><tr>"
             + "".join(f"<th>{html.escape(h)}</th>" for h in hdr) + "</tr>")
    M += ["## Benchmark", "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for row in rows:
        pub = row["published"]
        pub_s = "-" if pub is None else " / ".join(f"{v:.3f}" for v in pub)
        cells = [row["label"], *[row[m] for m, _, _, _ in TABLE], pub_s]
        H.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1]) + f"<td class='pub'>{html.escape(pub_s)}</td></tr>")
        M.append("| " + " | ".join(cells) + " |")
    H.append("</table>")
    H.append("<p class='pub'>Published (Huang et al. 2026, Table 1) for reference: "
             + "; ".join(f"{k} CO3D {v['co3d'][0]:.3f}/{v['co3d'][1]:.3f}/{v['co3d'][2]:.3f}/{v['co3d'][3]:.3f}" for k, v in PUBLISHED.items())
             + ".</p>")
    M.append("")
    figs: list[tuple[str, str]] = []
    if runs:
        figs.append(("Training curves", _png(fig_curves(runs))))
        figs.append(("Per-clip error histograms", _png(fig_hist(runs))))
        rad = fig_radar(runs)
        if rad is not None:
            figs.append(("Radar chart across metrics", _png(rad)))
        for bb, f in fig_heatmaps(runs):
            figs.append((f"Layer x timestep heat map: {bb}", _png(f)))
    cons = fig_consistency(allruns)
    if cons is not None:
        figs.append(("Feature consistency vs probe error", _png(cons)))
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, b64 in figs:
        H.append(f"<h2>{html.escape(name)}</h2>{_img(b64, name)}")
        fn = "".join(c if c.isalnum() else "_" for c in name.lower()) + ".png"
        (fig_dir / fn).write_bytes(base64.b64decode(b64))
        M += [f"## {name}", "", f"![{name}](figures/{fn})", ""]
    # 3D views of saved clips
    H.append("<h2>What the probe sees</h2>")
    M += ["## What the probe sees", ""]
    for r in runs:
        ck = r.get("checkpoint")
        if not ck:
            continue
        clips_dir = Path(ck).parent.parent / f"eval_{r.get('checkpoint_kind') or 'last'}" / "clips"
        for cf in sorted(clips_dir.glob("*.safetensors"))[:clips_per_run]:
            tag = f"{(r.get('backbone') or r['name'])}_{cf.stem}".replace("/", "_")
            try:
                parts, files = clip_figures(cf, out_dir / "clouds", tag)
            except Exception as e:  # noqa: BLE001 - a broken clip file must not kill the report
                H.append(f"<p>{html.escape(tag)}: could not render ({html.escape(str(e))})</p>")
                continue
            H.append(f"<h3>{html.escape(_run_label(r))}: {html.escape(cf.stem)}</h3>")
            H.append(f"<p>3D files: <code>{html.escape(str(files['glb']))}</code> (GLB) and the PLYs in <code>{html.escape(str(clips_dir))}</code></p>")
            M += [f"### {_run_label(r)}: {cf.stem}", "", f"GLB: `{files['glb']}`", ""]
            for name, b64 in parts:
                H.append(f"<h4>{html.escape(name)}</h4>{_img(b64, name)}")
                fn = f"{tag}_{'panel' if 'depth' in name else 'cloud'}.png"
                (fig_dir / fn).write_bytes(base64.b64decode(b64))
                M += [f"![{name}](figures/{fn})", ""]
    H.append("</body></html>")
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    atomic_write_text(html_path, "\n".join(H))
    atomic_write_text(md_path, "\n".join(M) + "\n")
    return {"html": html_path, "md": md_path}
