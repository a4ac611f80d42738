"""Print the code-health checks of the redesign: import back edges, oversized files and functions, duplicates.

    python tools/code_health.py [--strict]

Layers (a module may import only its own layer's package or a lower layer; ``cli`` modules sit on top):

    0 atomic, geometry, nn, config, lazy   1 data   2 backbones   3 features   4 probe   5 metrics
    6 results   7 report   8 pipeline   9 cli (vidprobe.cli, <package>.cli, *_cli)

Every ``import`` counts, at module level or inside a function. ``--strict`` exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "vidprobe"
RANK = {"atomic": 0, "geometry": 0, "nn": 0, "config": 0, "lazy": 0, "data": 1, "backbones": 2, "features": 3, "probe": 4,
        "metrics": 5, "results": 6, "report": 7, "pipeline": 8, "cli": 9}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 120


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def rank_of(module: str) -> tuple[int, str] | None:
    """(layer, package) of a ``vidprobe.*`` module; None for the package root and unknown top-level modules."""
    parts = module.split(".")
    if parts[0] != "vidprobe" or len(parts) < 2:
        return None
    if parts[-1] == "cli" or parts[-1].endswith("_cli"):
        return RANK["cli"], "cli"
    top = parts[1]
    if top in RANK:
        return RANK[top], top
    return None


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    pkg_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            out += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return [(n, ln) for n, ln in out if n.startswith("vidprobe.")]


def back_edges() -> list[str]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        mod = module_name(path)
        me = rank_of(mod)
        if me is None:
            continue
        seen = set()
        for target, line in imports_of(path, mod):
            other = rank_of(target)
            if other is None or other[1] == me[1]:
                continue
            if other[0] > me[0] and (target.rsplit(".", 1)[0], line) not in seen:
                seen.add((target, line))
                found.append(f"{path.relative_to(ROOT)}:{line}: {mod} (layer {me[0]} {me[1]}) imports {target} "
                             f"(layer {other[0]} {other[1]})")
    # one line per (file, line): `from a import b` yields both a and a.b
    uniq, keys = [], set()
    for f in found:
        k = f.split(" imports ")[0]
        if k not in keys:
            keys.add(k)
            uniq.append(f)
    return uniq


def big_files() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            out.append(f"{path.relative_to(ROOT)}: {n} lines (> {MAX_FILE_LINES})")
    return out


def big_functions() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}() {n} lines (> {MAX_FUNCTION_LINES})")
    return out


def duplicate_pairs(folder: Path) -> str:
    if shutil.which("duplicates") is None:
        return "n/a (the `duplicates` command is not installed here)"
    r = subprocess.run(["duplicates", "--repo", str(folder), "--most", "1", "--seconds", "60"], capture_output=True,
                       text=True, cwd=ROOT)
    first = (r.stdout.strip().splitlines() or ["?"])[0]
    return first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = ap.parse_args()
    edges, files, funcs = back_edges(), big_files(), big_functions()
    for title, rows in (("import back edges", edges), ("files over 500 lines", files),
                        ("functions over 120 lines", funcs)):
        print(f"{title}: {len(rows)}")
        for r in rows:
            print(f"  {r}")
    print(f"duplicates in src/vidprobe/backbones: {duplicate_pairs(PKG / 'backbones')}")
    print(f"duplicates in src/vidprobe: {duplicate_pairs(PKG)}")
    return 1 if args.strict and (edges or files or funcs) else 0


if __name__ == "__main__":
    sys.exit(main())
