"""The CLI is composed from per-package command apps: no import-time registration, library modules without typer.

The layer rule of tools/code_health.py names a module a *cli module* when its last name part is ``cli`` or ends in
``_cli``; only those may import typer, and nothing but ``vidprobe/cli.py`` imports the root app.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vidprobe"
TRANSITIONAL: set[str] = set()  # library files allowed to register on the root app while moving (none left)
COMMANDS = ["version", "extract", "compress", "preview", "backbones", "label", "check-backbone", "train", "evaluate",
            "report", "demo", "run", "plan", "sweep", "consistency", "compress-check", "prepare"]  # the flow order `vidprobe --help` has always listed


def _is_cli(module: str) -> bool:
    last = module.split(".")[-1]
    return last == "cli" or last.endswith("_cli")


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        yield path, ".".join(parts), ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.AST, module: str, is_pkg: bool, top_level_only: bool = False) -> list[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else [])) if node.level \
                else node.module or ""
            out += [f"{base}.{a.name}" for a in node.names] or [base]
    return out


def test_library_modules_import_without_typer():
    bad = []
    for path, mod, tree in _modules():
        rel = path.relative_to(SRC).as_posix()
        if _is_cli(mod) or rel in TRANSITIONAL:
            continue
        bad += [f"{rel}: {n}" for n in _imported(tree, mod, path.name == "__init__.py") if n.split(".")[0] == "typer"]
    assert not bad, "library modules importing typer (move the command into a cli module):\n" + "\n".join(bad)


def test_only_the_root_imports_the_root_app():
    bad = []
    for path, mod, tree in _modules():
        rel = path.relative_to(SRC).as_posix()
        if mod == "vidprobe.cli" or rel in TRANSITIONAL:
            continue
        names = _imported(tree, mod, path.name == "__init__.py")
        bad += [f"{rel}: {n}" for n in names if n == "vidprobe.cli" or n.startswith("vidprobe.cli.")]
    assert not bad, "modules importing vidprobe.cli (define a typer.Typer() and add it in vidprobe/cli.py):\n" + "\n".join(bad)


def test_cli_modules_import_only_light_modules_at_module_level():
    """What a command runs is imported inside the command, so `vidprobe --help` builds the app from cli modules alone."""
    bad = []
    for path, mod, tree in _modules():
        if not _is_cli(mod):
            continue
        for n in _imported(tree, mod, False, top_level_only=True):
            top = n.split(".")[0]
            ok = (top in sys.stdlib_module_names or top in ("typer", "__future__")
                  or n in ("vidprobe", "vidprobe.__version__") or (top == "vidprobe" and _is_cli(n)))
            if not ok:
                bad.append(f"{path.relative_to(SRC).as_posix()}: {n}")
    assert not bad, "cli modules importing library code at module level:\n" + "\n".join(bad)


def test_root_lists_every_command_in_flow_order():
    from typer.main import get_command

    from vidprobe import cli

    group = get_command(cli.build_app())
    assert list(group.commands) == COMMANDS
    assert list(group.commands["prepare"].commands) == ["synthetic", "co3d", "check"]
    assert cli.build_app() is not cli.build_app()  # composing twice gives two apps: nothing global is mutated


def test_python_m_vidprobe_cli_has_every_command():
    """`python -m vidprobe.cli` (as under torchrun) sees the same commands as the `vidprobe` entry point."""
    r = subprocess.run([sys.executable, "-m", "vidprobe.cli", "--help"], capture_output=True, text=True, timeout=120,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC.parent)})
    assert r.returncode == 0, r.stderr
    listed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    assert [c for c in listed if c in COMMANDS] == COMMANDS, r.stdout


def test_help_does_not_import_torch():
    code = ("import sys\nfrom vidprobe.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC.parent)})
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr
