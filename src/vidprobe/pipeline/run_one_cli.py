"""`vidprobe run`: extract, train, evaluate and report one or more backbones in one command
(the library: :mod:`vidprobe.pipeline.run_one`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer()


def _list(text: str | None, cast) -> list | None:
    if not text:
        return None
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list, got {text!r}") from None


def _number(x: str) -> int | float:
    return float(x) if "." in x else int(x)


@app.command()
def run(
    backbone: list[str] = typer.Option(..., "--backbone", "-b", help="Backbone to probe: a registered name, a plugin's, "
                                       "or hf:<hub repo id or local folder>. Repeat to compare several."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset directory (synthetic, native, CO3Dv2, DL3DV)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (reused: a rerun resumes). The report is "
                             "OUT/report/report.html."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers, e.g. 6,-1 (default: each backbone's "
                                         "reference layer)."),
    timesteps: Optional[str] = typer.Option(None, help="Diffusion models: scheduler indices or tau, e.g. 749 or 0.25."),
    backbone_arg: Optional[list[str]] = typer.Option(None, "--backbone-arg", "-a", help="KEY=VALUE build option for "
                                                     "every backbone, e.g. -a dtype=fp32 (repeatable)."),
    control: bool = typer.Option(True, help="Also probe each backbone with random weights (its own control)."),
    controls: Optional[str] = typer.Option(None, help="Extra control backbones, e.g. pixels,oracle."),
    presets: Optional[str] = typer.Option(None, help="Probe presets (default: reference; tiny with --quick)."),
    seeds: Optional[str] = typer.Option(None, help="Training seeds, e.g. 1,2,3 (default: 42)."),
    quick: bool = typer.Option(False, help="A first look on a CPU in minutes: tiny probe, 30 steps, 32x56 outputs. It "
                               "tests the pipeline on your model; it is not a measurement."),
    labels: Optional[Path] = typer.Option(None, help="Labels directory from `vidprobe label` (pseudo ground truth)."),
    compat: str = typer.Option("clean", help="clean (new studies) or reference (the release's settings)."),
    set_: list[str] = typer.Option([], "--set", help="Override a training field, e.g. --set max_steps=500."),
    progress: bool = typer.Option(True, help="Progress bars."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
) -> None:
    """Probe a model end to end: features, probe training, evaluation, report.

    Each backbone is extracted once (all layers and timesteps in one pass per
    video), a probe is trained and evaluated per layer x timestep x preset x
    seed, next to the same architecture with random weights, and everything
    lands in OUT/results.db and OUT/report/. Rerunning resumes.

    Example (built-in data, a tiny random model, a few minutes on a CPU):

        vidprobe prepare synthetic data/synth --videos 8 --frames 33 --height 64 --width 112

        vidprobe run -b dinov2-small -a tiny=true -a height=56 -a width=98 -d data/synth -o runs/first --quick
    """
    from vidprobe.features.cli import parse_backbone_args
    from vidprobe.pipeline.run_one import RunRequest
    from vidprobe.pipeline.run_one import run as run_all
    from vidprobe.pipeline.sweep import SweepError

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    req = RunRequest(
        backbones=list(backbone), dataset=str(dataset), out=str(out), layers=_list(layers, int),
        timesteps=_list(timesteps, _number), kwargs=parse_backbone_args(backbone_arg or []), control=control,
        controls=_list(controls, str) or [], presets=_list(presets, str), seeds=_list(seeds, int), quick=quick,
        labels=str(labels) if labels else None, compat=compat, overrides=list(set_),
    )
    try:
        result = run_all(req, progress=progress, echo=typer.echo)
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    report = result["report"]
    if report:
        typer.echo(f"report: {report['html']}")
    if result["summary"].failed:
        raise typer.Exit(1)
