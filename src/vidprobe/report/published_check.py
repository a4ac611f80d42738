"""Published vs measured: is the published number (Table 1) inside our 95% interval?

For a benchmark row with a published row (``row["published"][dataset]``, from
:func:`vidprobe.report.published.published_row`, at the table scale) and our interval
(``row["intervals"][dataset][metric]``, raw, the interval the table cell shows): the verdict is "within" when
``low <= published / table_scale <= high``, "outside" otherwise, and "no interval" when our interval is unknown
(e.g. one clip). The published numbers are rounded to 3 decimals; the comparison uses them as printed.
"""

from __future__ import annotations

import html

from vidprobe.metrics.registry import BENCHMARK_METRICS, METRICS

__all__ = ["pub_cell", "published_section", "verdict", "verdict_note", "verdicts"]


def verdict(published: float, low: float | None, high: float | None, table_scale: float = 1.0) -> str:
    """``"within"`` / ``"outside"`` / ``"no interval"`` for one published value (at ``table_scale``)."""
    if low is None or high is None or low != low or high != high:
        return "no interval"
    raw = published / table_scale
    return "within" if low <= raw <= high else "outside"


def verdicts(row: dict, dataset: str) -> dict[str, str]:
    """``{metric: verdict}`` of a row's published numbers on ``dataset`` (empty without a published row)."""
    pub = row.get("published", {}).get(dataset)
    if pub is None:
        return {}
    ivals = row.get("intervals", {}).get(dataset, {})
    out = {}
    for m, p in zip(BENCHMARK_METRICS, pub):
        if row.get("estimates", {}).get(dataset, {}).get(m) is None:
            out[m] = "not measured"
            continue
        lo, hi = ivals.get(m, (None, None))
        out[m] = verdict(p, lo, hi, METRICS[m].table_scale)
    return out


def verdict_note(row: dict, datasets: list[str]) -> str:
    """The published table row's notes: each number's verdict against our 95% interval, in column order."""
    parts = []
    for d in datasets:
        v = verdicts(row, d)
        if v:
            parts.append((f"{d}: " if len(datasets) > 1 else "") + ", ".join(f"{METRICS[m].label} {v[m]}" for m in BENCHMARK_METRICS))
    return ("vs our 95% interval: " + "; ".join(parts)) if parts else ""


def pub_cell(value: float, verdict: str | None) -> str:
    """A published number with its verdict against our interval: ``0.559 (within)``."""
    return f"{value:.3f}" + (f" ({verdict})" if verdict else "")


def published_section(datasets: list[str], rows: list[dict]) -> tuple[list[str], list[str]]:
    """HTML and Markdown lines: one line per (row, dataset) with a published row: published, ours, verdict."""
    heads = ["row", "dataset", *[METRICS[m].column() for m in BENCHMARK_METRICS]]
    body = []
    counts = {"within": 0, "outside": 0}
    for row in rows:
        for ds in datasets:
            v = verdicts(row, ds)
            if not v:
                continue
            cells = []
            for m, p in zip(BENCHMARK_METRICS, row["published"][ds]):
                counts[v[m]] = counts.get(v[m], 0) + 1
                cells.append(f"published {p:.3f} / ours {row['cells'][ds].get(m, '-')}: {v[m]}")
            body.append([row["label"], ds, *cells])
    title = "Published vs measured"
    if not body:
        msg = "No pretrained row matches a published model on CO3Dv2 / DL3DV."
        return [f"<h3>{title}</h3><p>{msg}</p>"], [f"### {title}", "", msg, ""]
    intro = (f"{counts['within']} of {counts['within'] + counts['outside']} published numbers lie inside our 95% "
             "interval ('within'); 'outside' means our measurement differs from the published one beyond our own "
             "uncertainty (the published numbers' own uncertainty is not stated).")
    H = [f"<h3>{title}</h3><p>{html.escape(intro)}</p><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
         + "</tr>"]
    H += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in b) + "</tr>" for b in body]
    H.append("</table>")
    M = [f"### {title}", "", intro, "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    M += ["| " + " | ".join(b) + " |" for b in body]
    return H, M + [""]
