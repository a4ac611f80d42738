"""The `vidprobe` command, composed from the command modules of each package.

Each package keeps its commands in a cli module with its own ``typer.Typer()`` (``app``), next to the
code they drive; this module adds those apps to the root app, in the order `vidprobe --help` lists them
(the typical flow). No package imports this module and nothing registers itself on import.

Adding a command: define it on the ``app`` of the cli module of the package it drives (a new
``<package>/<name>_cli.py`` holding ``app = typer.Typer()`` when it deserves its own file), import
what it runs inside the command function (so that `vidprobe --help` stays fast), and add that ``app``
to ``PARTS`` below.
"""

from __future__ import annotations

import typer

from vidprobe import labels_cli
from vidprobe.backbones import check_cli
from vidprobe.backbones import cli as backbones_cli
from vidprobe.data import cli as data_cli
from vidprobe.data import prepare_cli
from vidprobe.features import cli as features_cli
from vidprobe.features import compress_cli
from vidprobe.pipeline import compress_check_cli, consistency_cli, demo_cli, evaluate_cli, run_one_cli, sweep_cli
from vidprobe.pipeline import plan_cli
from vidprobe.probe import cli as probe_cli
from vidprobe.report import cli as report_cli

HELP = (
    "vidprobe: measure how much 3D a frozen video foundation model encodes.\n\n"
    "Typical flow: prepare a dataset -> extract features -> train a probe -> evaluate -> report. "
    "`vidprobe demo` runs the whole study on the built-in synthetic data."
)

#: the command apps, in the order `vidprobe --help` lists their commands (after `version`)
PARTS: tuple[typer.Typer, ...] = (
    features_cli.app,  # extract
    compress_cli.app,  # compress
    data_cli.app,  # preview
    backbones_cli.app,  # backbones
    labels_cli.app,  # label
    check_cli.app,  # check-backbone
    probe_cli.app,  # train
    evaluate_cli.app,  # evaluate
    report_cli.app,  # report
    demo_cli.app,  # demo
    run_one_cli.app,  # run
    plan_cli.app,  # plan
    sweep_cli.app,  # sweep
    consistency_cli.app,  # consistency
    compress_check_cli.app,  # compress-check
)
#: command groups: name -> app (listed after the commands)
GROUPS: dict[str, typer.Typer] = {"prepare": prepare_cli.app}  # prepare synthetic / co3d / check


def _root() -> None:
    """vidprobe: measure how much 3D a frozen video foundation model encodes."""


def version() -> None:
    """Print the package version."""
    from vidprobe import __version__

    typer.echo(__version__)


def build_app() -> typer.Typer:
    """A fresh root app with every command of :data:`PARTS` and every group of :data:`GROUPS`."""
    root = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    root.callback()(_root)
    root.command()(version)
    for part in PARTS:
        root.add_typer(part)  # no name: its commands join the root
    for name, group in GROUPS.items():
        root.add_typer(group, name=name)
    return root


app = build_app()


def _load() -> None:
    """No-op, kept for callers of the former import-time registration: :data:`app` is complete on import."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
