"""The reproduction ledger: current on disk, every 'identical' row backed by a test that exists."""

import ast
from pathlib import Path

import pytest

from vidprobe.report.reproduction import ROWS, STATUSES, Setting, render_markdown, rows_for
from vidprobe.report.published import PUBLISHED

ROOT = Path(__file__).resolve().parents[1]


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_page_is_current():
    page = (ROOT / "docs" / "REPRODUCTION.md").read_text()
    assert page == render_markdown() + "\n", "docs/REPRODUCTION.md is stale: run python tools/write_reproduction.py"


def test_every_identical_row_names_an_existing_test():
    missing = []
    for r in ROWS:
        if r.status != "identical":
            continue
        file, _, func = r.test.partition("::")
        p = ROOT / file
        if not p.is_file() or func.split("[")[0] not in _test_functions(p):
            missing.append(f"{r.row}/{r.setting}: {r.test}")
    assert not missing, "identical rows whose proving test does not exist:\n" + "\n".join(missing)


def test_rows_are_valid_and_name_published_models():
    names = set(PUBLISHED) | {"all", "WAN2.1-1.3B"}
    assert ROWS
    for r in ROWS:
        assert r.status in STATUSES
        assert r.row in names, r
    with pytest.raises(ValueError, match="must name its test"):
        Setting("all", "x", "y", "a", "b", "identical")
    with pytest.raises(ValueError, match="reason"):
        Setting("all", "x", "y", "a", "b", "deviation")


def test_every_published_model_has_rows():
    for model in PUBLISHED:
        assert any(r.row == model for r in ROWS), model


def test_rows_for_selects_shared_and_model_rows():
    sel = rows_for(["Fast3R"])
    assert {r.row for r in sel} <= {"all", "Fast3R"}
    assert any(r.row == "all" for r in sel) and any(r.row == "Fast3R" for r in sel)


def test_report_section_shows_the_rows_of_the_reported_models():
    from vidprobe.report.html import reproduction_section

    h, m = reproduction_section([{"backbone": "fast3r"}, {"backbone": "oracle"}])
    text = "\n".join(m)
    assert "## Reproduction status" in text
    assert all(f"| {r.area} |" in text for r in rows_for(["Fast3R"])[:3])
    body = [line for line in m if line.startswith("| ") and not line.startswith("| area")]
    assert len(body) == len(rows_for(["Fast3R"])) < len(ROWS)
    h2, m2 = reproduction_section([{"backbone": "oracle"}])
    assert "only the shared rows apply" in "\n".join(m2)
    assert len(m2) < len(m)
