"""Orchestration (layer 8): the steps that combine the layered packages into a study.

* :mod:`vidprobe.pipeline.evaluate` - score a trained probe run (probe + metrics + results DB + PLY files);
* :mod:`vidprobe.pipeline.consistency` - cross-view feature consistency of a feature store;
* :mod:`vidprobe.pipeline.demo` - the whole study on the built-in synthetic data;
* ``vidprobe.pipeline.sweep`` (moving here) - a resumable grid of experiments.

Each ``*_cli.py`` module here holds the command of its step (a ``typer.Typer`` that
:mod:`vidprobe.cli` composes); the library modules import without typer. Nothing below
this layer imports it.
"""
