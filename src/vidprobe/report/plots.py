"""Figures of the report (matplotlib, Agg backend), each returned as a base64 PNG string.

Every function takes plain run dicts as loaded by :func:`vidprobe.report.html.load_runs`
(``metrics``, ``ci``, ``curves``, ``clips``, ``backbone``, ``layer``, ``timestep``, ...)
or the tensors of one saved evaluation clip; none reads a model or a feature.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vidprobe.metrics.registry import LOWER_IS_BETTER, METRICS, RADAR_METRICS

RADAR = list(RADAR_METRICS)  # axes of the radar chart (vidprobe.metrics.registry)
LOWER_BETTER = LOWER_IS_BETTER


def png(fig) -> str:
    """Render ``fig`` to a base64 PNG and close it."""
    b = io.BytesIO()
    fig.savefig(b, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(b.getvalue()).decode()


def run_label(r: dict) -> str:
    lab = r.get("backbone") or r.get("name") or f"run {r['run_id']}"
    extra = []
    if r.get("layer") is not None:
        extra.append("Llast" if r["layer"] == -1 else f"L{r['layer']}")
    if r.get("timestep") is not None:
        extra.append(f"t{r['timestep']}")
    if r.get("seed") is not None:
        extra.append(f"s{r['seed']}")
    if r.get("checkpoint_kind") == "best":
        extra.append("best ckpt")
    lab = f"{lab} ({', '.join(extra)})" if extra else lab
    w = (r.get("weights") or {}).get("label")  # set by load_runs (vidprobe.report.provenance)
    return f"{lab} [{w}]" if w else lab


def color(i: int, n: int):
    """Distinct colours for up to 20 runs (the default cycle repeats after 10)."""
    return f"C{i % 10}" if n <= 10 else plt.get_cmap("tab20")(i % 20)


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=6, ncol=2 if n > 6 else 1)


def fig_curves(runs: list[dict]):
    """Training loss (solid) and held-out loss (dashed) per run; None when no run has a curve."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    n = 0
    for i, r in enumerate(runs):
        c = color(i, len(runs))
        for name, style in (("loss", "-"), ("eval_loss", "--")):
            pts = [(s, v) for s, v in r.get("curves", {}).get(name, []) if v is not None and np.isfinite(v) and v > 0]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, style, color=c, lw=1, label=run_label(r) if name == "loss" else None)
                n += 1
    if not n:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("loss (solid: train, dashed: held-out)")
    ax.set_yscale("log")
    _legend(ax, len(runs))
    ax.set_title("Training curves")
    return fig


def fig_hist(runs: list[dict], metric_label: str = f"per-clip {METRICS['point_err'].column(scaled=False)}"):
    """Histogram of per-clip errors per run; None when no run has per-clip values."""
    series = [(run_label(r), [v for v in r.get("clips", {}).values() if v is not None and np.isfinite(v)]) for r in runs]
    series = [(lab, v) for lab, v in series if v]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    allv = np.concatenate([np.asarray(v, float) for _, v in series])
    bins = np.linspace(allv.min(), allv.max() if allv.max() > allv.min() else allv.min() + 1e-6, 20)
    for i, (lab, v) in enumerate(series):
        ax.hist(v, bins=bins, histtype="step", lw=1.4, label=lab, color=color(i, len(series)))
    ax.set_xlabel(metric_label)
    ax.set_ylabel("clips")
    _legend(ax, len(series))
    ax.set_title("Per-clip error")
    return fig


def fig_radar(runs: list[dict]):
    """Each run's metrics normalised per axis over the runs shown (outer = best); None with < 3 metrics or < 2 runs."""
    names = [m for m in RADAR if sum(r["metrics"].get(m) is not None for r in runs) >= 2]
    if len(names) < 3 or len(runs) < 2:
        return None
    vals = np.array([[np.nan if r["metrics"].get(m) is None else r["metrics"][m] for m in names] for r in runs], float)
    lo, hi = np.nanmin(vals, 0), np.nanmax(vals, 0)
    norm = (vals - lo) / np.where(hi - lo > 0, hi - lo, 1)
    for j, m in enumerate(names):
        if m in LOWER_BETTER:
            norm[:, j] = 1 - norm[:, j]
    ang = np.linspace(0, 2 * np.pi, len(names), endpoint=False).tolist()
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(111, polar=True)
    for i, (r, row) in enumerate(zip(runs, norm)):
        row = np.nan_to_num(row)
        ax.plot(ang + ang[:1], list(row) + [row[0]], lw=1, label=run_label(r), color=color(i, len(runs)))
    ax.set_xticks(ang)
    ax.set_xticklabels([METRICS[m].column(scaled=False) for m in names], fontsize=7)
    ax.set_yticklabels([])
    ax.legend(fontsize=6, loc="upper right", bbox_to_anchor=(1.5, 1.1))
    ax.set_title("Across metrics (per axis: outer = best of these runs)", fontsize=9)
    return fig


def fig_heatmaps(runs: list[dict], metric: str = "point_err") -> list[tuple[str, object]]:
    """One layer x timestep heat map per backbone that has at least two cells."""
    by_bb: dict[str, list[dict]] = {}
    for r in runs:
        by_bb.setdefault(r.get("backbone") or "?", []).append(r)
    figs = []
    for bb, rs in by_bb.items():
        layers = sorted({r["layer"] for r in rs if r.get("layer") is not None})
        ts = sorted({r["timestep"] for r in rs if r.get("timestep") is not None}) or [None]
        if len(layers) * len(ts) < 2:
            continue
        grid = np.full((len(layers), len(ts)), np.nan)
        for r in rs:
            v = r["metrics"].get(metric)
            if r.get("layer") in layers and r.get("timestep") in ts and v is not None:
                i, j = layers.index(r["layer"]), ts.index(r.get("timestep"))
                # several seeds of one cell: their mean
                grid[i, j] = v if np.isnan(grid[i, j]) else (grid[i, j] + v) / 2
        fig, ax = plt.subplots(figsize=(1.8 + 0.9 * len(ts), 1.2 + 0.45 * len(layers)))
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        for i in range(len(layers)):
            for j in range(len(ts)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=6, color="w")
        ax.set_xticks(range(len(ts)), ["-" if t is None else str(t) for t in ts])
        ax.set_yticks(range(len(layers)), ["last" if l_ == -1 else str(l_) for l_ in layers])
        ax.set_xlabel("timestep")
        ax.set_ylabel("layer")
        spec = METRICS[metric]
        ax.set_title(f"{bb}: {spec.column(scaled=False)}, {spec.direction}", fontsize=9)
        fig.colorbar(im, ax=ax)
        figs.append((bb, fig))
    return figs


def consistency_points(runs: list[dict]) -> list[tuple[float, float, str]]:
    """(correspondence error px, probe Point Err, label) for probe runs whose cell has a consistency run."""
    cons = {(r.get("backbone"), r.get("layer"), r.get("timestep")): r for r in runs if r.get("kind") == "consistency"}
    pts = []
    for r in runs:
        if r.get("kind") != "probe":
            continue
        c = cons.get((r.get("backbone"), r.get("layer"), r.get("timestep")))
        if c and c["metrics"].get("corr_err_px") is not None and r["metrics"].get("point_err") is not None:
            pts.append((c["metrics"]["corr_err_px"], r["metrics"]["point_err"], run_label(r)))
    return pts


def fig_consistency(runs: list[dict]):
    pts = consistency_points(runs)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for x, y, lab in pts:
        ax.scatter(x, y)
        ax.annotate(lab, (x, y), fontsize=6)
    x, y = METRICS["corr_err_px"], METRICS["point_err"]
    ax.set_xlabel(f"{x.label} ({x.unit})")
    ax.set_ylabel(f"probe {y.column(scaled=False)}")
    ax.set_title("Feature consistency vs probe error")
    return fig


def fig_clip_panel(t: dict):
    """Rows: input frames, GT depth, predicted depth, predicted depth confidence, GT confidence (when it varies)."""
    imgs = t["images"]
    S = imgs.shape[0]
    valid = t["valid"].bool().numpy()
    rows = [("input", [im.permute(1, 2, 0).clamp(0, 1).numpy() for im in imgs], None)]
    gt_d = [np.where(v, d.numpy(), np.nan) for d, v in zip(t["gt_depth"], valid)]
    rows.append(("GT depth", gt_d, "turbo"))
    if "pred_depth" in t:
        rows.append(("pred depth", [d.numpy() for d in t["pred_depth"]], "turbo"))
    if "pred_depth_conf" in t:
        rows.append(("pred depth conf", [d.numpy() for d in t["pred_depth_conf"]], "magma"))
    conf_ok = t["gt_confidence"][t["valid"].bool()].float() if "gt_confidence" in t else None
    if conf_ok is not None and conf_ok.numel() > 1 and float(conf_ok.std()) > 1e-6:  # constant (synthetic): nothing to see
        rows.append(("GT conf", [d.numpy() for d in t["gt_confidence"]], "magma"))
    fig, axes = plt.subplots(len(rows), S, figsize=(2.1 * S, 1.3 * len(rows)), squeeze=False)
    # depth rows share one colour scale (GT range) so prediction and truth compare directly
    dmax = float(np.nanmax(np.stack(gt_d))) if np.isfinite(np.stack(gt_d)).any() else 1.0
    for i, (name, ims, cmap) in enumerate(rows):
        if cmap == "turbo":
            vmin, vmax = 0.0, dmax
        elif cmap:
            stack = np.stack(ims)
            vmin, vmax = float(np.nanmin(stack)), float(np.nanmax(stack))
        else:
            vmin = vmax = None
        for j in range(S):
            ax = axes[i][j]
            ax.imshow(ims[j], cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
            if i == 0 and "frames" in t:
                ax.set_title(f"frame {int(t['frames'][j])}", fontsize=7)
    return fig


def fig_clip_cloud(gt: np.ndarray, pred: np.ndarray | None, colors: np.ndarray, gt_frusta: np.ndarray,
                   pred_frusta: np.ndarray | None, max_points: int = 4000):
    """GT and predicted point clouds side by side with camera frusta (GT red, predicted blue)."""
    rng = np.random.default_rng(0)
    idx = rng.choice(len(gt), size=min(len(gt), max_points), replace=False) if len(gt) else np.zeros(0, int)
    fig = plt.figure(figsize=(9, 4.2))
    panels = [("ground truth", gt, [(gt_frusta, "red")]),
              ("prediction (Sim(3)-aligned)", pred, [(gt_frusta, "red")] + ([(pred_frusta, "blue")] if pred_frusta is not None else []))]
    for k, (name, P, frs) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        # OpenCV world (y down, z forward) shown with z as depth and -y up
        if P is not None and len(idx):
            Q = P[idx]
            ok = np.isfinite(Q).all(1)
            ax.scatter(Q[ok, 0], Q[ok, 2], -Q[ok, 1], c=colors[idx][ok] / 255.0, s=1, depthshade=False)
        for fr, c in frs:
            for seg in fr:
                ax.plot(seg[:, 0], seg[:, 2], -seg[:, 1], c=c, lw=0.7)
        if len(gt):
            lo, hi = np.nanpercentile(gt, 1, 0), np.nanpercentile(gt, 99, 0)
            if len(gt_frusta):
                cams = gt_frusta.reshape(-1, 3)
                lo, hi = np.minimum(lo, cams.min(0)), np.maximum(hi, cams.max(0))
            pad = 0.1 * float(np.max(hi - lo) + 1e-6)
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[2] - pad, hi[2] + pad)
            ax.set_zlim(-hi[1] - pad, -lo[1] + pad)
        ax.set_title(name, fontsize=8)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
    return fig
