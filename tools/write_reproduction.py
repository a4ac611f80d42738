"""Render docs/REPRODUCTION.md from the reproduction ledger (src/vidprobe/report/reproduction_rows.py)."""

from pathlib import Path

from vidprobe.atomic import atomic_write_text
from vidprobe.report.reproduction import render_markdown

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "REPRODUCTION.md"
    atomic_write_text(out, render_markdown() + "\n")
    print(f"wrote {out}")
