"""`vidprobe demo` (= `make demo`): the whole study on the built-in synthetic data (:mod:`vidprobe.pipeline.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output directory (reused: a rerun resumes)."),
    quick: bool = typer.Option(False, help="A seconds-long smoke run (3 backbones, a few steps)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    threads: int = typer.Option(1, help="torch CPU threads. The demo's models are tiny: one thread avoids the "
                                "thread spinning that makes them many times slower on a busy machine."),
) -> None:
    """Run the whole study on built-in synthetic data: no weights, no downloads, CPU.

    Renders synthetic object orbits and room walk-throughs with exact ground
    truth, extracts features from the controls (oracle, pixels) and from tiny
    randomly initialised instances of each real architecture family (DINOv2,
    V-JEPA, V-JEPA 2, VideoMAE, WAN2.1, CogVideoX, Open-Sora 2.0, Fast3R,
    VGGT), trains and evaluates a probe per backbone into OUT/results.db and
    writes OUT/report/report.html and report.md.
    """
    import torch

    from vidprobe.pipeline.demo import default_plan, run_demo

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        summary = run_demo(out, default_plan(quick), progress=progress, echo=typer.echo)
    finally:
        torch.set_num_threads(before)  # callers in the same process (tests) keep their own setting
    if not summary["backbones"]:
        raise typer.Exit(1)
