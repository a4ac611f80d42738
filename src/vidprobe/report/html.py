"""`vidprobe report RESULTS.db`: a self-contained HTML page plus Markdown.

Sections: the benchmark table in the published layout (rows = model cells,
columns = Point Err x10 / Depth Err / AUC@5 / AUC@30 per dataset, with 95%
intervals, and the published numbers in a grey row under every pretrained row
whose backbone matches a published model, each with its verdict "within" /
"outside" our interval (:mod:`vidprobe.report.published_check`, also listed in
"Published vs measured"); "Paired comparisons" (each row against the best row
on the same clips, paired bootstrap + Holm: :mod:`vidprobe.report.paired`);
every row names its weights
(:mod:`vidprobe.report.provenance`), rows are grouped pretrained / random
weights / controls / unknown, a notes column states seeds, checkpoint,
small samples and untrained heads, and a notice computed from the data says
when any row is not a pretrained model), a layer x timestep heat map when a
backbone has several cells, a radar chart across metrics, training curves,
per-clip error histograms, feature consistency vs probe error (only when
consistency runs exist), an interactive 3D viewer of the saved evaluation
clips (:mod:`vidprobe.report.viewer3d`: GT and Sim(3)-aligned predicted points
and cameras, one camera shared by the runs' scenes, depth maps on one colour
scale), and for a few saved evaluation clips per run: input
frames with GT / predicted depth and confidence, point clouds with camera
frusta as PNG renders plus PLY and GLB files beside the page.

The HTML embeds every image as a base64 PNG and plotly.js once (only when the
viewer has a clip to show): it needs no other file and no network. The Markdown links the same PNGs under ``figures/``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from vidprobe.atomic import atomic_write_bytes, atomic_write_text
from vidprobe.metrics.registry import BENCHMARK_METRICS, METRICS
from vidprobe.report import plots
from vidprobe.report.paired import paired_section
from vidprobe.report.plots import run_label
from vidprobe.report.provenance import MIN_CLIPS, n_clips, pick_seeds, untrained_notes, weights_notice, weights_of_run
from vidprobe.report.published import PUBLISHED, dataset_kind, published_row
from vidprobe.report.published_check import pub_cell, published_section, verdict_note, verdicts
from vidprobe.report.viewer3d import viewer_section

TABLE = [METRICS[m] for m in BENCHMARK_METRICS]  # the published layout's columns, at its scale (Point Err x10)
DATASET_NAMES = {"co3d": "CO3Dv2", "dl3dv": "DL3DV"}


def _fmt(v, scale: float = 1.0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.3f}"


def fmt_ci(v, lo, hi, scale: float = 1.0) -> str:
    """``0.300 [0.270, 0.330]``; the interval is left out when either bound is unknown."""
    s = _fmt(v, scale)
    if s == "-" or lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return s
    return f"{s} [{_fmt(lo, scale)}, {_fmt(hi, scale)}]"


def dataset_label(dataset: str | None) -> str:
    """Display name of a run's dataset: CO3Dv2 / DL3DV / synthetic / the directory name."""
    kind = dataset_kind(dataset)
    if kind:
        return DATASET_NAMES[kind]
    if not dataset:
        return "?"
    p = Path(dataset)
    try:
        info = json.loads((p / "dataset.json").read_text())
        if isinstance(info, dict) and "synthetic" in json.dumps(info.get("generator", ""))[:200].lower():
            return "synthetic"
    except (OSError, ValueError):
        pass
    return p.name or str(dataset)


def load_runs(db_path: Path, split: str = "test") -> list[dict]:
    """Every finished probe run (metrics, intervals, curves, per-clip Point Err) and consistency run."""
    from vidprobe.results import ResultsDB

    out = []
    with ResultsDB(db_path) as db:
        for r in db.runs(status="done", kind="probe"):
            rows = {m["metric"]: m for m in db.metric_rows(r["run_id"], split=split, scope="aggregate")}
            r["metrics"] = {k: v["value"] for k, v in rows.items()}
            r["ci"] = {k: (v["ci_low"], v["ci_high"]) for k, v in rows.items()}
            r["curves"] = {n: db.curve(r["run_id"], n) for n in db.curve_names(r["run_id"])}
            r["clip_values"] = {m: db.clip_metrics(r["run_id"], m, split=split) for m in BENCHMARK_METRICS}
            r["clips"] = r["clip_values"]["point_err"]
            r["weights"] = weights_of_run(r)
            out.append(r)
        for r in db.runs(status="done", kind="consistency"):
            r["metrics"] = db.get_metrics(r["run_id"], split=split)
            out.append(r)
    return out


GROUPS = (("pretrained", "Pretrained models"),
          ("random", "Random-weight models (tiny / random init: not the pretrained networks)"),
          ("control", "Controls (no pretrained model)"),
          ("unknown", "Weights unknown (recorded before vidprobe recorded them; no readable feature store)"))
TABLE_NOTE = (
    "Rows are grouped by what the features' weights were (from each run's feature store manifest). "
    "A row's runs are distinct training seeds: one training run evaluated at both checkpoints counts once "
    "(its last checkpoint; 'best ckpt' marks a row where only the best one was evaluated). With two or more "
    "distinct seeds a cell shows their mean and Student-t 95% interval, otherwise the one run's bootstrap 95% "
    f"interval over clips. Notes flag fewer than {MIN_CLIPS} test clips, a camera head with AUC@30 = 0, and a Point Err "
    "not below the pixels control on the same dataset; with both of the last two the probe is stated untrained "
    "at its budget. Published numbers appear only under pretrained (or unknown-weights) rows.")


def _cell(rs: list[dict]) -> tuple[dict, dict, list[str], dict]:
    """``(formatted, estimates, notes, intervals)`` of one row's runs on one dataset (already one per seed);
    ``intervals[metric] = (low, high)`` raw (None when unknown), the interval the cell shows."""
    from vidprobe.metrics.stats import mean_ci_t

    seeds = {r.get("seed") for r in rs}
    by_seeds = len(rs) >= 2 and None not in seeds
    notes = [f"mean of {len(rs)} seeds"] if by_seeds else []
    if len(rs) >= 2 and not by_seeds:
        notes.append("runs without a recorded seed: showing the latest")
        rs = rs[-1:]
    elif len(rs) == 1:
        notes.append("1 seed: bootstrap interval over clips")
    kinds = sorted({r.get("checkpoint_kind") or "last" for r in rs})
    if kinds != ["last"]:
        notes.append("best ckpt" if kinds == ["best"] else "mixed ckpts")
    small = [n for n in (n_clips(r) for r in rs) if n is not None and n < MIN_CLIPS]
    if small:
        notes.append(f"only {min(small)} test clips (< {MIN_CLIPS})")
    vals, est, ivals = {}, {}, {}
    for spec in TABLE:
        m, scale = spec.name, spec.table_scale
        got = [r["metrics"].get(m) for r in rs if r["metrics"].get(m) is not None]
        if not got:
            vals[m] = "-"
        elif not by_seeds:
            lo, hi = rs[0]["ci"].get(m, (None, None))
            vals[m], est[m], ivals[m] = fmt_ci(got[0], lo, hi, scale), got[0], (lo, hi)
        else:
            ci = mean_ci_t(got)
            vals[m], est[m] = fmt_ci(ci.estimate, ci.low, ci.high, scale), ci.estimate
            ivals[m] = tuple(None if math.isnan(x) else x for x in (ci.low, ci.high))
    return vals, est, notes, ivals


def benchmark_table(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """The published layout: ``(datasets, rows)``.

    A row is one cell (weights, backbone, layer, timestep, probe) with, per dataset, each TABLE metric
    formatted as ``value [low, high]`` (see :data:`TABLE_NOTE` for which interval), ``row["weights"]`` (the
    :func:`vidprobe.report.provenance.weights_of_run` record), ``row["group"]`` (a :data:`GROUPS` key),
    ``row["notes"][dataset]`` (seeds, checkpoint, small-sample and untrained facts) and
    ``row["published"][dataset]`` where a pretrained (or unknown) backbone matches a published model,
    ``row["intervals"][dataset][metric]`` (the shown interval, raw ``(low, high)``), ``row["runs"][dataset]``
    (the runs behind the cell, one per seed; :mod:`vidprobe.report.paired` reads their per-clip values) and
    ``row["cell"]`` (layer, timestep, probe). Rows come in :data:`GROUPS` order.
    """
    probe = [r for r in runs if r.get("kind", "probe") == "probe"]
    order = {"CO3Dv2": 0, "DL3DV": 1}
    datasets = sorted({dataset_label(r.get("dataset")) for r in probe}, key=lambda d: (order.get(d, 2), d))
    cells: dict[tuple, dict[str, list[dict]]] = {}
    weights: dict[tuple, dict] = {}
    for r in probe:
        w = r.get("weights") or weights_of_run(r)
        key = (w["label"], r.get("backbone") or r.get("name"), r.get("layer"), r.get("timestep"), r.get("probe"))
        weights[key] = w
        cells.setdefault(key, {}).setdefault(dataset_label(r.get("dataset")), []).append(r)
    rows = []
    for key, per_ds in cells.items():
        wlabel, bb, layer, ts, probe_name = key
        w = weights[key]
        group = {"tiny": "random", "random_init": "random"}.get(w["kind"], w["kind"])
        extra = []
        if layer is not None:
            extra.append("Llast" if layer == -1 else f"L{layer}")
        if ts is not None:
            extra.append(f"t{ts}")
        if probe_name:
            extra.append(str(probe_name))
        label = (f"{bb} ({', '.join(extra)})" if extra else str(bb)) + (f" [{wlabel}]" if wlabel.startswith("weights") else f" [weights: {wlabel}]")
        row: dict = {"label": label, "backbone": bb, "weights": w, "group": group, "cells": {}, "seeds": {},
                     "estimates": {}, "notes": {}, "published": {}, "intervals": {}, "runs": {},
                     "cell": {"layer": layer, "timestep": ts, "probe": probe_name}}
        for ds, rs in per_ds.items():
            picked = pick_seeds(rs)
            row["seeds"][ds] = len(picked)
            row["runs"][ds] = picked
            row["cells"][ds], row["estimates"][ds], row["notes"][ds], row["intervals"][ds] = _cell(picked)
            pub = published_row(bb, rs[0].get("dataset"))
            if pub is not None and group in ("pretrained", "unknown"):
                row["published"][ds] = pub
            elif pub is not None:
                row["notes"][ds].append("published number not shown: not the pretrained model")
        rows.append(row)
    untrained_notes(rows)
    rank = {g: i for i, (g, _) in enumerate(GROUPS)}
    rows.sort(key=lambda r: rank.get(r["group"], len(GROUPS)))  # stable: first-seen order within a group
    return datasets, rows


def _row_notes(row: dict, datasets: list[str]) -> str:
    parts = []
    for d in datasets:
        n = row["notes"].get(d)
        if n:
            parts.append((f"{d}: " if len(datasets) > 1 else "") + ", ".join(n))
    return "; ".join(parts)


def _grouped(rows: list[dict]):
    """``(group title or None, row)`` pairs: a title before the first row of each group."""
    titles = dict(GROUPS)
    seen = None
    for row in rows:
        yield (titles.get(row["group"], row["group"]) if row["group"] != seen else None), row
        seen = row["group"]


def _table_html(datasets: list[str], rows: list[dict]) -> str:
    from vidprobe.report.published import BACKBONE_TO_PUBLISHED

    n = len(TABLE)
    h = ["<table><tr><th rowspan='2'>model [weights]</th>"]
    h += [f"<th colspan='{n}'>{html.escape(d)}</th>" for d in datasets]
    h.append("<th rowspan='2'>notes</th></tr><tr>"
             + "".join(f"<th>{html.escape(s.column())}</th>" for _ in datasets for s in TABLE) + "</tr>")
    for title, row in _grouped(rows):
        if title:
            h.append(f"<tr class='group'><td colspan='{n * len(datasets) + 2}'><b>{html.escape(title)}</b></td></tr>")
        cls = "" if row["group"] == "pretrained" else f" class='{html.escape(row['group'])}'"
        h.append(f"<tr{cls}><td>{html.escape(row['label'])}</td>")
        for d in datasets:
            c = row["cells"].get(d)
            h += [f"<td>{html.escape(c[s.name]) if c else '-'}</td>" for s in TABLE]
        h.append(f"<td class='note'>{html.escape(_row_notes(row, datasets))}</td></tr>")
        if row["published"]:
            h.append(f"<tr class='pub'><td>&nbsp;&nbsp;published: {html.escape(BACKBONE_TO_PUBLISHED[row['backbone']])}</td>")
            for d in datasets:
                p, v = row["published"].get(d), verdicts(row, d)
                h += [f"<td>{'-' if p is None else html.escape(pub_cell(x, v.get(s.name)))}</td>"
                      for x, s in zip(p or [None] * n, TABLE)]
            h.append(f"<td class='note'>{html.escape(verdict_note(row, datasets))}</td></tr>")
    h.append("</table>")
    return "".join(h)


def _table_md(datasets: list[str], rows: list[dict]) -> list[str]:
    from vidprobe.report.published import BACKBONE_TO_PUBLISHED

    hdr = ["model", *[f"{d} {s.column()}" for d in datasets for s in TABLE], "notes"]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for title, row in _grouped(rows):
        if title:
            out.append("| " + " | ".join([f"**{title}**", *[""] * (len(hdr) - 1)]) + " |")
        cells = [row["cells"].get(d, {}).get(s.name, "-") for d in datasets for s in TABLE]
        out.append("| " + " | ".join([row["label"], *cells, _row_notes(row, datasets)]) + " |")
        if row["published"]:
            pub = []
            for d in datasets:
                p, v = row["published"].get(d), verdicts(row, d)
                pub += ["-"] * len(TABLE) if p is None else [f"{x:.3f}" for x in p]
            out.append("| " + " | ".join([f"*published: {BACKBONE_TO_PUBLISHED[row['backbone']]}*", *pub,
                                          verdict_note(row, datasets)]) + " |")
    return out


def _published_md() -> list[str]:
    hdr = ["model", *[f"{DATASET_NAMES[d]} {s.column()}" for d in ("co3d", "dl3dv") for s in TABLE]]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for model, v in PUBLISHED.items():
        out.append("| " + " | ".join([model, *[f"{x:.3f}" for d in ("co3d", "dl3dv") for x in v[d]]]) + " |")
    return out


def run_dir_of(run: dict, runs_root: Path | None = None) -> Path | None:
    """The run directory behind a DB row (from its checkpoint path), or under ``runs_root`` when the
    recorded one has moved (``runs_root/<run dir name>`` or ``runs_root/<run name>``)."""
    ck = run.get("checkpoint")
    cands = []
    if ck:
        rd = Path(ck).parent.parent
        cands.append(rd)
        if runs_root is not None:
            cands.append(Path(runs_root) / rd.name)
    if runs_root is not None and run.get("name"):
        cands.append(Path(runs_root) / str(run["name"]).replace("/", "_"))
    for c in cands:
        if c.is_dir():
            return c
    return None


def clip_figures(clip_file: Path, out_dir: Path, tag: str) -> tuple[list[tuple[str, str]], dict[str, Path]]:
    """Depth/confidence panel and point-cloud render of one saved evaluation clip; writes its GLB and PLYs."""
    from safetensors.torch import load_file

    from vidprobe.report.export import frustum_lines, write_glb
    from vidprobe.data.ply import write_ply

    t = load_file(str(clip_file))
    for key in ("images", "gt_points", "gt_depth", "valid", "gt_extrinsics", "gt_intrinsics"):
        if key not in t:
            raise KeyError(f"{clip_file}: missing tensor {key!r}")
    imgs = t["images"]
    valid = t["valid"].bool()
    hw = tuple(imgs.shape[-2:])
    gt = t["gt_points"][valid].numpy()
    pred_key = "pred_points_aligned" if "pred_points_aligned" in t else "pred_points"
    pred = t[pred_key][valid].numpy() if pred_key in t else None
    cols = (imgs.permute(0, 2, 3, 1)[valid].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    fr_gt = frustum_lines(t["gt_extrinsics"], t["gt_intrinsics"], hw)
    fr_pred = None
    if "pred_extrinsics" in t:
        fr_pred = frustum_lines(t["pred_extrinsics"], t.get("pred_intrinsics", t["gt_intrinsics"]), hw)
    panel = plots.png(plots.fig_clip_panel(t))
    cloud = plots.png(plots.fig_clip_cloud(gt, pred, cols, fr_gt, fr_pred))

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"gt_ply": write_ply(out_dir / f"{tag}_gt.ply", gt, cols)}
    clouds = [(gt, cols)]
    lines = [(fr_gt, (1.0, 0.0, 0.0))]
    if pred is not None:
        ok = np.isfinite(pred).all(1)
        files["pred_ply"] = write_ply(out_dir / f"{tag}_pred.ply", pred[ok], cols[ok])
        clouds.append((pred[ok], (cols[ok] // 2 + 60).astype(np.uint8)))  # dimmer: tell them apart in a viewer
    if fr_pred is not None:
        lines.append((fr_pred, (0.0, 0.3, 1.0)))
    files["glb"] = write_glb(out_dir / f"{tag}.glb", clouds, lines)
    return [("Frames, depth and confidence", panel),
            ("Point clouds and cameras (GT red, predicted blue)", cloud)], files


CSS = (
    "body{font-family:sans-serif;max-width:1250px;margin:auto;padding:1em;color:#222}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#eee;text-align:center}td:first-child{text-align:left;white-space:nowrap}"
    ".notice{background:#fff3cd;border:1px solid #e0c060;padding:.7em}img{max-width:100%}"
    "h2{border-bottom:1px solid #ddd;margin-top:1.6em}.pub{color:#888;font-style:italic}code{font-size:12px}"
    ".group td{background:#f4f4f4;text-align:left}.control td,.random td,.unknown td{background:#fbf3e6}"
    "td.note{text-align:left;font-size:11px;color:#555}"
)


def reproduction_section(runs: list[dict]) -> tuple[list[str], list[str]]:
    """HTML and Markdown lines: the reproduction ledger's rows for the published models among ``runs``."""
    from vidprobe.report.published import BACKBONE_TO_PUBLISHED
    from vidprobe.report.reproduction import markdown_table, rows_for

    models = sorted({BACKBONE_TO_PUBLISHED[r["backbone"]] for r in runs if r.get("backbone") in BACKBONE_TO_PUBLISHED})
    intro = ("How each setting of the study's release compares with vidprobe's reference mode "
             "(docs/REPRODUCTION.md has every row): identical rows are proven by a named test against the upstream "
             "code, deviations say why.")
    if not models:
        msg = "No run here uses a model of the published table, so only the shared rows apply."
        intro = f"{intro} {msg}"
    rows = rows_for(models)
    md = markdown_table(rows)
    H = [f"<h2>Reproduction status</h2><p>{html.escape(intro)}</p>", "<table class='pubtable'><tr>"
         + "".join(f"<th>{html.escape(c.strip())}</th>" for c in md[0].strip("|").split("|")) + "</tr>"]
    for r in rows:
        proof = r.test if r.status == "identical" else r.reason
        cells = [r.area, f"{r.setting} ({r.row})", r.release, r.vidprobe, r.status, proof or ""]
        H.append(f"<tr class='{r.status}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    H.append("</table>")
    M = ["## Reproduction status", "", intro, "", *md, ""]
    return H, M


def _clips_section(runs: list[dict], out_dir: Path, fig_dir: Path, clips_per_run: int, runs_root) -> tuple:
    """HTML and Markdown lines of the static clip renders, and the ``(run label, clip file)`` pairs shown."""
    H = ["<h2>What the probe sees</h2><p>Saved evaluation clips: input frames with ground-truth and predicted "
         "depth and confidence; point clouds with camera frusta (PLY and GLB files beside this page open in "
         "any point-cloud / glTF viewer).</p>"]
    M, items = ["## What the probe sees", ""], []
    shown = missing = 0
    for r in runs:
        rd = run_dir_of(r, runs_root)
        if rd is None:
            missing += 1
            continue
        clips_dir = rd / f"eval_{r.get('checkpoint_kind') or 'last'}" / "clips"
        for cf in sorted(clips_dir.glob("*.safetensors"))[:clips_per_run]:
            items.append((run_label(r), cf))
            tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{r.get('name') or r.get('backbone')}_{cf.stem}")
            try:
                parts, files = clip_figures(cf, out_dir / "clouds", tag)
            except Exception as e:  # noqa: BLE001 - a broken clip file must not kill the report
                H.append(f"<p>{html.escape(str(cf))}: could not render ({html.escape(type(e).__name__)}: {html.escape(str(e))})</p>")
                M += [f"{cf}: could not render ({type(e).__name__}: {e})", ""]
                continue
            shown += 1
            rel = {k: v.relative_to(out_dir).as_posix() for k, v in files.items()}
            H.append(f"<h3>{html.escape(run_label(r))}: {html.escape(cf.stem)}</h3>")
            H.append("<p>3D files: " + ", ".join(f"<code>{html.escape(v)}</code>" for v in rel.values()) + "</p>")
            M += [f"### {run_label(r)}: {cf.stem}", "", "3D files: " + ", ".join(f"`{v}`" for v in rel.values()), ""]
            for name, b64 in parts:
                H.append(f"<h4>{html.escape(name)}</h4><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
                fn = f"{tag}_{'panel' if 'depth' in name else 'cloud'}.png"
                atomic_write_bytes(fig_dir / fn, base64.b64decode(b64), fsync=False)
                M += [f"![{name}](figures/{fn})", ""]
    if missing:
        msg = (f"{missing} run(s) have no run directory here (moved or deleted); pass --runs-root to point at "
               "where the run directories are now.")
        H.append(f"<p>{html.escape(msg)}</p>")
        M += [msg, ""]
    if not shown:
        H.append("<p>No saved evaluation clips found.</p>")
        M += ["No saved evaluation clips found.", ""]
    return H, M, items


def write_report(db_path: str | Path, out_dir: str | Path, notice: str | None = None, split: str = "test",
                 clips_per_run: int = 1, title: str = "vidprobe report",
                 runs_root: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained), ``report.md``, ``figures/*.png`` and ``clouds/*.{ply,glb}``
    into ``out_dir``; returns ``{"html": ..., "md": ...}``."""
    db_path, out_dir = Path(db_path), Path(out_dir)
    if not db_path.is_file():
        raise FileNotFoundError(f"results database not found: {db_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    allruns = load_runs(db_path, split)
    runs = [r for r in allruns if r.get("kind") == "probe"]
    datasets, rows = benchmark_table(runs)

    H: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (f"<p>Results database: <code>{html.escape(str(db_path))}</code> &middot; split: {html.escape(split)} "
         f"&middot; {len(runs)} probe runs</p>"),
    ]
    M: list[str] = [f"# {title}", "", f"Results database: `{db_path}`, split `{split}`, {len(runs)} probe runs.", ""]
    if notice:
        H.append(f"<p class='notice'><b>Read this first.</b> {html.escape(notice)}</p>")
        M += [f"> **Read this first.** {notice}", ""]
    computed = weights_notice(rows)  # from the data: shown whether or not a notice was passed
    if computed:
        H.append(f"<p class='notice'><b>Weights.</b> {html.escape(computed)}</p>")
        M += [f"> **Weights.** {computed}", ""]

    intro = ("95% intervals in brackets. Point Err is the reference definition (Sim(3) fitted on the top-25% "
             "GT-confidence pixels, confidence-weighted mean distance) x10; lower is better for errors, higher "
             "for AUC. " + TABLE_NOTE)
    H.append(f"<h2>Benchmark</h2><p>{html.escape(intro)}</p>")
    M += ["## Benchmark", "", intro, ""]
    if rows:
        H.append(_table_html(datasets, rows))
        M += _table_md(datasets, rows)
        ph, pm = published_section(datasets, rows)
        H += ph
        M += ["", *pm]
    else:
        H.append("<p>No finished probe runs in this database.</p>")
        M.append("No finished probe runs in this database.")
    H.append("<h3>Published numbers (Huang et al., CVPR 2026, Table 1) for reference</h3>")
    pub_md = _published_md()
    M += ["", "### Published numbers (Huang et al., CVPR 2026, Table 1)", "", *pub_md, ""]
    H.append("<table class='pubtable'><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in pub_md[0].strip("|").split("|")) + "</tr>")
    for line in pub_md[2:]:
        H.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>")
    H.append("</table>")

    for sh, sm in (paired_section(datasets, rows), reproduction_section(runs)):  # paired comparisons, ledger
        H, M = H + sh, M + sm

    figs: list[tuple[str, str]] = []
    if runs:
        for name, fig in (("Training curves", plots.fig_curves(runs)), ("Per-clip error histograms", plots.fig_hist(runs)),
                          ("Radar chart across metrics", plots.fig_radar(runs))):
            if fig is not None:
                figs.append((name, plots.png(fig)))
        for bb, f in plots.fig_heatmaps(runs):
            figs.append((f"Layer x timestep heat map: {bb}", plots.png(f)))
    cons = plots.fig_consistency(allruns)
    if cons is not None:
        figs.append(("Feature consistency vs probe error", plots.png(cons)))
    for name, b64 in figs:
        H.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
        fn = "".join(c if c.isalnum() else "_" for c in name.lower()) + ".png"
        atomic_write_bytes(fig_dir / fn, base64.b64decode(b64), fsync=False)
        M += [f"## {name}", "", f"![{name}](figures/{fn})", ""]

    ch, cm, items = _clips_section(runs, out_dir, fig_dir, clips_per_run, runs_root)
    vh, vm = viewer_section(items)  # the same clips, interactive (vidprobe.report.viewer3d)
    H, M = H + vh + ch, M + vm + cm
    H.append("</body></html>")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_path, "\n".join(H))
    atomic_write_text(md_path, "\n".join(M) + "\n")
    return {"html": html_path, "md": md_path}
