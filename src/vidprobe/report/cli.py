"""`vidprobe report RESULTS.db`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (itself included) when it is not a directory, else None."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


@app.command()
def report(
    db: Path = typer.Argument(..., help="Results database (SQLite) written by `vidprobe evaluate` / `sweep` / `demo`."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Output directory for report.html, report.md, figures/ and clouds/."),
    split: str = typer.Option("test", help="Which split's metrics to show."),
    clips_per_run: int = typer.Option(1, help="Saved evaluation clips to render per run (depth panels, point clouds, GLB)."),
    runs_root: Path = typer.Option(None, "--runs-root", help="Where the run directories are now, when they moved since "
                                   "the database was written (looked up by run directory name)."),
    title: str = typer.Option("vidprobe report", help="Page title."),
) -> None:
    """Write a self-contained HTML report and a Markdown report from a results database.

    Benchmark table (Point Err x10, Depth Err, AUC@5, AUC@30 with 95% intervals,
    published numbers alongside where a backbone matches), heat maps, radar
    chart, training curves, per-clip histograms, consistency scatter, and
    point clouds with camera frusta (PNG in the page, GLB files beside it).

    Example:  vidprobe report results.db --out report/
    """
    from vidprobe.report.html import write_report
    from vidprobe.results import ResultsDBError

    bad = _file_in_the_way(out)
    if bad is not None:
        typer.echo(f"error: --out {out}: {'is' if bad == out else f'lies under {bad},'} a regular file, not a directory",
                   err=True)
        raise typer.Exit(2)
    try:
        paths = write_report(db, out, split=split, clips_per_run=clips_per_run, runs_root=runs_root, title=title)
    except (FileNotFoundError, ResultsDBError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {paths['html']} and {paths['md']}")
