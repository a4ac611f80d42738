"""Screenshots of a vidprobe report in headless Chromium, for issue notes and reviews.

    python tools/report_screenshots.py demo_out            # a demo output dir (its report/report.html)
    python tools/report_screenshots.py path/to/report.html --out /tmp/vidprobe_screens
    python tools/report_screenshots.py runs/results.db     # writes the report first (into OUT/report)

Writes ``table.png`` (the notices and the benchmark table with its row labels), ``paired.png`` (the paired
comparisons), ``viewer.png`` (the interactive 3D viewer as it loads) and ``viewer_dragged.png`` (after one drag on
the first scene: every scene follows). Needs ``playwright`` (pip) and a Chromium (``apt-get install chromium``;
``--chromium`` or ``VIDPROBE_CHROMIUM`` names another); ``playwright install`` is not needed. Every request the page
makes is listed; any that is not the page's own file is reported and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTION_JS = """([start, end, maxh]) => {
  // the page region from the top of `start` (a CSS selector or an h2 title) to the top of the next h2 after `end`
  const h2s = [...document.querySelectorAll('h2')];
  const find = s => s.startsWith('css:') ? document.querySelector(s.slice(4)) : h2s.find(h => h.textContent.startsWith(s));
  const a = find(start), b = find(end || start);
  if (!a || !b) return null;
  const next = h2s.find(h => h !== b && (b.compareDocumentPosition(h) & Node.DOCUMENT_POSITION_FOLLOWING));
  const top = a.getBoundingClientRect().top + window.scrollY - 6;
  const bottom = next ? next.getBoundingClientRect().top + window.scrollY - 6 : document.body.scrollHeight;
  return {x: 0, y: top, width: document.documentElement.scrollWidth, height: Math.min(bottom - top, maxh)};
}"""
SHOTS = (  # file, region start, region end (its next h2 closes it), maximum height in px
    ("table.png", "css:p.notice", "Benchmark", 2400),
    ("paired.png", "Paired comparisons", None, 2400),
    ("viewer.png", "Interactive 3D viewer", None, 2000),
)


def find_report(source: Path, out: Path) -> Path:
    """``report.html`` itself, the one under a demo dir / report dir, or one written from a results DB."""
    if source.suffix == ".html" and source.is_file():
        return source
    for cand in (source / "report" / "report.html", source / "report.html"):
        if cand.is_file():
            return cand
    db = source if source.suffix == ".db" else source / "results.db"
    if not db.is_file():
        raise SystemExit(f"error: {source}: no report.html and no results.db to write one from")
    from vidprobe.report.html import write_report

    return write_report(db, out / "report")["html"]


def drag(page, selector: str, dx: int = 140, dy: int = 30) -> None:
    loc = page.locator(selector)
    loc.scroll_into_view_if_needed()
    box = loc.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=10)
    page.mouse.up()
    page.wait_for_timeout(800)


def shoot(report: Path, out: Path, chromium: str) -> tuple[list[Path], list[str]]:
    """Save the screenshots; returns ``(files written, requests that left the page)``."""
    from playwright.sync_api import sync_playwright

    from vidprobe.atomic import atomic_write_bytes

    written, requests = [], []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True, args=FLAGS,
                                                   viewport={"width": 1300, "height": 1000})
        ctx.on("request", lambda r: requests.append(r.url))
        page = ctx.new_page()
        page.goto(report.resolve().as_uri())
        page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(g => g._fullLayout)",
                               timeout=60_000)
        page.wait_for_timeout(1500)  # WebGL scenes draw after the layout
        for name, start, end, maxh in SHOTS:
            clip = page.evaluate(SECTION_JS, [start, end, maxh])
            if clip is None:
                print(f"{name}: section {start!r} not in this report, skipped")
                continue
            written.append(out / name)
            atomic_write_bytes(out / name, page.screenshot(clip=clip, full_page=True), fsync=False)
        if page.locator("#v3d-s0-0").count():
            drag(page, "#v3d-s0-0")
            clip = page.evaluate(SECTION_JS, ["Interactive 3D viewer", None, 2000])
            written.append(out / "viewer_dragged.png")
            atomic_write_bytes(written[-1], page.screenshot(clip=clip, full_page=True), fsync=False)
        ctx.close()
    page_file = report.resolve().as_uri()
    return written, [u for u in requests if u != page_file and not u.startswith(("data:", "blob:", "about:"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, nargs="?", default=Path("demo_out"),
                    help="report.html, a demo output / report directory, or a results.db (default: demo_out)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vidprobe_screens"), help="where the PNGs go")
    ap.add_argument("--chromium", default=os.environ.get("VIDPROBE_CHROMIUM") or shutil.which("chromium")
                    or shutil.which("chromium-browser"), help="the Chromium executable")
    a = ap.parse_args(argv)
    if not a.chromium:
        print("error: no chromium found (apt-get install chromium, or pass --chromium)", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("error: playwright is not installed (pip install playwright)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    report = find_report(a.source, a.out)
    written, outside = shoot(report, a.out, a.chromium)
    for f in written:
        print(f)
    for u in outside:
        print(f"request left the page: {u}", file=sys.stderr)
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
