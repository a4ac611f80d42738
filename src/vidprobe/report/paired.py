"""The report's "Paired comparisons" section: is a row's difference from the best row resolved or noise?

For each dataset, the benchmark rows (:func:`vidprobe.report.html.benchmark_table`) whose runs were scored on
the same clip ids form one comparison set (rows on other clips cannot be paired; a set of one is skipped with
that reason). Within a set, for each benchmark metric (:data:`vidprobe.metrics.registry.BENCHMARK_METRICS`,
direction from its :class:`~vidprobe.metrics.spec.MetricSpec`) the best row (by the table's estimate) is the
reference, and every other row gets :func:`vidprobe.metrics.stats.paired_bootstrap` of ``row - best`` over the
clips both scored, its 95% interval and a two-sided p-value; the p-values of one metric in one set are one
family, adjusted with :func:`vidprobe.metrics.stats.holm`, and a comparison is "resolved" when its adjusted p
is below :data:`ALPHA`, "within noise" otherwise. Heat-map families (one weights + backbone + probe with
several layers / timesteps in the set) get the same against the family's best cell.

Per-clip values come from the results DB (``run["clip_values"][metric]``, ``{clip_id: value}``, recorded by
:mod:`vidprobe.pipeline.evaluate`). A row with several seeds uses each clip's mean over its seeds (so the
paired mean is the row's mean; the interval is over clips only). The compared statistic is the mean over clips
of per-clip values: the table's number for Point Err, Depth Err and clean-mode AUCs; reference-mode AUCs are
reported per batch of clips, so there the paired mean can differ slightly from the table.
"""

from __future__ import annotations

import html
import math

from vidprobe.metrics.registry import BENCHMARK_METRICS, METRICS
from vidprobe.metrics.stats import holm, paired_bootstrap

__all__ = ["ALPHA", "compare", "paired_section", "row_clips"]

ALPHA = 0.05
N_RESAMPLES = 2000


def row_clips(row: dict, dataset: str, metric: str) -> dict[str, float | None] | None:
    """``{clip_id: value}`` of a row on a dataset (the per-clip mean over its seeds); None when not recorded
    or when its seeds were scored on different clips."""
    runs = row.get("runs", {}).get(dataset) or []
    per = []
    for r in runs:
        got = (r.get("clip_values") or {}).get(metric)
        if got is None and metric == "point_err":
            got = r.get("clips")
        if not got:
            return None
        per.append(got)
    if not per:
        return None
    ids = set(per[0])
    if any(set(p) != ids for p in per[1:]):
        return None
    out: dict[str, float | None] = {}
    for cid in sorted(ids):
        vals = [p[cid] for p in per]
        out[cid] = None if any(v is None for v in vals) else sum(vals) / len(vals)
    return out


def compare(entries: list[tuple[str, dict, float | None]], metric: str, n_resamples: int = N_RESAMPLES,
            seed: int = 0) -> tuple[str, dict[str, dict]] | None:
    """One family: ``entries`` = ``(label, clips, estimate)`` on the same clip ids.

    Returns ``(best label, {label: {"diff", "low", "high", "p", "p_holm", "n", "dropped", "verdict"}})`` for every
    other entry (``diff = entry - best``, raw units), or None with fewer than two usable entries.
    """
    spec = METRICS[metric]
    usable = [(lab, c, e) for lab, c, e in entries if c and e is not None and math.isfinite(e)]
    if len(usable) < 2:
        return None
    pick = min if spec.lower_is_better else max
    best = pick(usable, key=lambda t: t[2])
    results: dict[str, dict] = {}
    for lab, clips, _ in usable:
        if lab == best[0]:
            continue
        r = paired_bootstrap(clips, best[1], n_resamples=n_resamples, seed=seed)
        results[lab] = {"diff": r.diff, "low": r.low, "high": r.high, "p": r.p, "n": r.n, "dropped": r.dropped}
    adj = holm([v["p"] for v in results.values()])
    for v, a in zip(results.values(), adj):
        v["p_holm"] = a
        v["verdict"] = "-" if math.isnan(a) else ("resolved" if a < ALPHA else "within noise")
    return best[0], results


def _fmt(res: dict, scale: float) -> str:
    if math.isnan(res["low"]):
        return f"{res['diff'] * scale:+.3f} (n={res['n']}: no interval)"
    return (f"{res['diff'] * scale:+.3f} [{res['low'] * scale:+.3f}, {res['high'] * scale:+.3f}] "
            f"p={res['p_holm']:.3g} {res['verdict']}")


def _family_table(title: str, rows: list[dict], dataset: str, n_resamples: int, seed: int) -> tuple[list[str], list[str]]:
    """HTML and Markdown of one comparison set: rows = runs, columns = metrics."""
    labels = [r["label"] for r in rows]
    cols: dict[str, tuple[str, dict] | None] = {}
    n_used: set[int] = set()
    for m in BENCHMARK_METRICS:
        entries = [(r["label"], row_clips(r, dataset, m), r["estimates"].get(dataset, {}).get(m)) for r in rows]
        cols[m] = compare(entries, m, n_resamples, seed)
        if cols[m]:
            n_used |= {v["n"] for v in cols[m][1].values()}
    heads = [METRICS[m].column() for m in BENCHMARK_METRICS]
    body = []
    for lab in labels:
        cells = []
        for m in BENCHMARK_METRICS:
            c = cols[m]
            if c is None:
                cells.append("-")
            elif c[0] == lab:
                cells.append("best")
            else:
                cells.append(_fmt(c[1][lab], METRICS[m].table_scale) if lab in c[1] else "-")
        body.append((lab, cells))
    clips = f"{min(n_used)}-{max(n_used)}" if len(n_used) > 1 else (str(next(iter(n_used))) if n_used else "0")
    cap = f"{title} ({len(rows)} rows, {clips} matched clips)"
    H = [f"<h3>{html.escape(cap)}</h3><table><tr><th>row (difference = row - best)</th>"
         + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"]
    H += ["<tr><td>" + html.escape(lab) + "</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
          for lab, cells in body]
    H.append("</table>")
    M = [f"### {cap}", "", "| row (row - best) | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 1)]
    M += ["| " + " | ".join([lab, *cells]) + " |" for lab, cells in body]
    return H, M + [""]


def _clip_key(row: dict, dataset: str) -> frozenset | None:
    for m in BENCHMARK_METRICS:
        c = row_clips(row, dataset, m)
        if c:
            return frozenset(c)
    return None


INTRO = ("Each row against the best row of the same dataset and clips, per metric: the difference row - best "
         "(mean over the clips both scored, at the table's scale) with its paired bootstrap 95% interval over "
         "clips (the same resampled clips for both), and the two-sided p-value Holm-adjusted across the rows of "
         f"one table and metric; 'resolved' when the adjusted p < {ALPHA}, else 'within noise'. A row with several "
         "seeds uses each clip's mean over its seeds (the interval is over clips only). Heat-map families (one "
         "backbone at several layers / timesteps) are compared with their own best cell.")


def paired_section(datasets: list[str], rows: list[dict], n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> tuple[list[str], list[str]]:
    """HTML and Markdown lines of the "Paired comparisons" section for the benchmark ``rows``."""
    H = [f"<h2>Paired comparisons</h2><p>{html.escape(INTRO)}</p>"]
    M = ["## Paired comparisons", "", INTRO, ""]
    shown = 0
    skipped: list[str] = []
    for ds in datasets:
        sets: dict[frozenset, list[dict]] = {}
        for r in rows:
            if ds in r.get("cells", {}):
                key = _clip_key(r, ds)
                if key is None:
                    skipped.append(f"{ds}: {r['label']} has no per-clip values recorded")
                else:
                    sets.setdefault(key, []).append(r)
        for members in sets.values():
            if len(members) < 2:
                skipped.append(f"{ds}: {members[0]['label']} shares its clips with no other row")
                continue
            h, m = _family_table(f"{ds}: all rows", members, ds, n_resamples, seed)
            H += h
            M += m
            shown += 1
            fams: dict[tuple, list[dict]] = {}
            for r in members:
                fams.setdefault((r["weights"]["label"], r["backbone"], r.get("cell", {}).get("probe")), []).append(r)
            for (_, bb, _), fam in fams.items():
                if 2 <= len(fam) < len(members):
                    h, m = _family_table(f"{ds}: {bb} layers / timesteps", fam, ds, n_resamples, seed)
                    H += h
                    M += m
    if not shown:
        msg = "Skipped: fewer than 2 rows share clips on any dataset, so no paired comparison exists."
        H.append(f"<p>{html.escape(msg)}</p>")
        M += [msg, ""]
    if skipped:
        msg = "Not compared: " + "; ".join(skipped) + "."
        H.append(f"<p class='note'>{html.escape(msg)}</p>")
        M += [msg, ""]
    return H, M
