"""The reproduction ledger: every setting of the study's release next to vidprobe's, with its status.

One :class:`Setting` per row; ``ROWS`` is the whole ledger. ``docs/REPRODUCTION.md`` is rendered from it
(``python tools/write_reproduction.py``; a test keeps the page current) and the HTML report shows the rows of
the models it reports. Status:

* ``identical``: vidprobe's reference mode / paper config does what the release does. Such a row must name
  the test that proves it (``tests/<file>.py::<test>``); a test checks that the test exists.
* ``deviation``: an intentional difference, with its reason.
* ``unknown``: the release does not say, or it could not be checked here.
"""

from __future__ import annotations

from vidprobe.report.reproduction_rows import ALL, ROWS, STATUSES, Setting


def rows_for(models: list[str] | None = None) -> list[Setting]:
    """The shared rows plus those of ``models`` (all rows when None), in ledger order."""
    if models is None:
        return list(ROWS)
    keep = set(models) | {ALL}
    return [r for r in ROWS if r.row in keep]


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Setting]) -> list[str]:
    out = ["| area | setting | release | vidprobe (reference mode / paper config) | status | proof or reason |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        proof = f"`{r.test}`" if r.status == "identical" else r.reason
        out.append(f"| {_cell(r.area)} | {_cell(r.setting)} | {_cell(r.release)} | {_cell(r.vidprobe)} | "
                   f"{r.status} | {_cell(proof)} |")
    return out


def mode_settings() -> list[dict]:
    """Every named clean/reference difference: training (probe, loss, optimiser, sampler) then metrics."""
    from vidprobe.metrics.modes import settings_table as metric_settings
    from vidprobe.probe.config import settings_table as train_settings

    return [*train_settings(), *metric_settings()]


def render_markdown() -> str:
    """The whole of ``docs/REPRODUCTION.md``."""
    rows = list(ROWS)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    lines = [
        "# Reproduction ledger",
        "",
        "Every setting of the study's release (Huang et al., CVPR 2026, code release zxhuang1698/VidFM3D) next to",
        "what vidprobe does in `compat: reference` mode with the `configs/paper/` files. **identical** rows name",
        "the test that proves them (golden fixtures under `tests/fixtures/parity/`, made by running the upstream",
        "code with `tools/parity/*.py`); **deviation** rows say why vidprobe differs; **unknown** rows say what could",
        "not be checked. Nothing here claims \"as the release\" without a test.",
        "",
        "Generated from `src/vidprobe/report/reproduction_rows.py` by `python tools/write_reproduction.py`; "
        "`tests/test_reproduction.py` keeps it current.",
        "",
        f"Totals: {counts['identical']} identical, {counts['deviation']} intentional deviations, "
        f"{counts['unknown']} unknown.",
        "",
    ]
    lines += ["## The two modes", "",
              "`compat: clean` (the default) is vidprobe's own, better-founded protocol for new studies; "
              "`compat: reference` reproduces the release and is what `configs/paper/` uses. Every difference "
              "between them is one named setting; an explicit value overrides the mode's.", "",
              "| setting | clean | reference | what it is |", "|---|---|---|---|"]
    lines += [f"| `{_cell(str(m['setting']))}` | {_cell(str(m['clean']))} | {_cell(str(m['reference']))} | "
              f"{_cell(str(m['doc']))} |" for m in mode_settings()]
    lines.append("")
    order = [ALL] + sorted({r.row for r in rows if r.row != ALL})
    for model in order:
        sel = [r for r in rows if r.row == model]
        if not sel:
            continue
        lines += [f"## {'Every row (probe, training, metrics, labels)' if model == ALL else model}", ""]
        lines += markdown_table(sel)
        lines.append("")
    return "\n".join(lines)


__all__ = ["ALL", "ROWS", "STATUSES", "Setting", "markdown_table", "render_markdown", "rows_for"]
