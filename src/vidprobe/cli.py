"""The `vidprobe` command. Each sub-command lives next to the code it drives."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="vidprobe: measure how much 3D a frozen video foundation model encodes.\n\n"
    "Typical flow: prepare a dataset -> extract features -> train a probe -> evaluate -> report. "
    "`vidprobe demo` runs the whole study on the built-in synthetic data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to `app` (each does `from vidprobe.cli import app`).
COMMAND_MODULES: list[str] = [
    "vidprobe.features.cli",
    "vidprobe.data.cli",
    "vidprobe.data.cli_real",
    "vidprobe.backbones.cli",
    "vidprobe.labels_cli",
    "vidprobe.backbones.check",
    "vidprobe.probe.cli",
    "vidprobe.report.cli",
    "vidprobe.demo",
    "vidprobe.sweep",
    "vidprobe.consistency",
]


@app.callback()
def _root() -> None:
    """vidprobe: measure how much 3D a frozen video foundation model encodes."""


def _load() -> None:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod)


@app.command()
def version() -> None:
    """Print the package version."""
    from vidprobe import __version__

    typer.echo(__version__)


def main() -> None:
    _load()
    app()


if __name__ == "__main__":
    main()
