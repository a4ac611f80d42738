"""`vidprobe plan CONFIG`: a sweep's bill before it runs (the library: ``vidprobe.pipeline.plan``)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


def _count(n: int) -> str:
    """A parameter count as ``1.42 B``, ``383 M`` or ``152 k``."""
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def render_plan(plan) -> None:
    """The plan as two rich tables (store; passes, steps and memory) on the terminal, then its notes."""
    from rich.console import Console
    from rich.table import Table

    from vidprobe.pipeline.plan import human

    console = Console(width=max(180, Console().width))
    where = f" of {plan.videos} videos" if plan.videos is not None else " (video count unknown: --videos N)"
    store = Table(title=f"Feature store{where} -> {plan.out}/features (store dtype {plan.dtype})")
    for col in ("backbone", "maps per video [N,h,w,C]", "keys", *plan.codecs):
        store.add_column(col, justify="left" if col == "backbone" else "right", no_wrap=True)
    for e in plan.entries:
        grid = "x".join(map(str, e.grid)) if e.grid else f"n/a: {e.error}"
        store.add_row(e.label, grid, str(e.keys), *[human(e.store_bytes(c)) for c in plan.codecs])
    store.add_row("[b]sweep[/b]", "", "", *[f"[b]{human(plan.store_bytes(c))}[/b]" for c in plan.codecs])
    console.print(store)

    comp = Table(title=f"Passes, steps and peak memory on {plan.device} (train videos: {plan.train_videos or '?'})")
    for col in ("backbone", "passes/video", "VAE/video", "blocks run", "params", "extract peak", "with offload",
                "cells", "train steps", "train peak", "checkpoints"):
        comp.add_column(col, justify="left" if col == "backbone" else "right", no_wrap=True)
    for e in plan.entries:
        if e.grid is None:
            comp.add_row(e.label, *["n/a"] * 6, str(len(e.training)), str(e.train_steps), "n/a", "n/a")
            continue
        ck = sum(t.checkpoints_bytes for t in e.training)
        peak_off = human(e.extract_peak_offload) if e.diffusion else "-"
        comp.add_row(e.label, str(e.passes_per_video), str(e.vae_per_video or "-"), f"{e.deepest}/{e.num_layers}",
                     f"{_count(e.params)} = {human(e.param_bytes)}", human(e.extract_peak), peak_off,
                     str(len(e.training)), str(e.train_steps), human(e.train_peak), human(ck))
    comp.add_row("[b]sweep[/b]", *[""] * 6, f"[b]{plan.cells}[/b]", f"[b]{plan.train_steps}[/b]", "",
                 f"[b]{human(plan.checkpoints_bytes)}[/b]")
    console.print(comp)
    for e in plan.entries:
        for t in e.training[:1]:
            if t.memory is not None:
                m = t.memory
                console.print(f"  {e.label}: probe {_count(m.param_count)} parameters; a step of batch {t.batch} x "
                              f"{t.frames} frames -> {t.out_hw[0]}x{t.out_hw[1]} ({t.precision}, gradient checkpointing "
                              f"{'on' if t.grad_checkpointing else 'off'}): parameters {human(m.params)} + gradients "
                              f"{human(m.grads)} + AdamW {human(m.optimizer)} + step {human(m.activations)}")
    for n in plan.notes:
        console.print(f"  note: {n}")


def check_or_refuse(cfg: dict, config: Path) -> None:
    """`vidprobe sweep`'s preflight (:func:`vidprobe.pipeline.plan.preflight`): print the plan and exit 2 when the
    store's disk or the device is too small for it; a planner failure only warns (it must not block a sweep)."""
    from vidprobe.pipeline.plan import human, preflight

    try:
        pf = preflight(cfg, config=str(config))
    except Exception as e:  # noqa: BLE001 - the check is advice; the sweep's own errors come later, named
        typer.echo(f"warning: plan check skipped ({type(e).__name__}: {e})", err=True)
        return
    if not pf.problems:
        typer.echo(f"[plan] fits: {human(pf.needed_disk)} to write, {human(pf.free_disk)} free on {pf.disk_root}; "
                   f"{pf.device} {human(pf.free_device)} free")
        return
    render_plan(pf.plan)
    for p in pf.problems:
        typer.echo(f"error: {p}", err=True)
    typer.echo("refusing to start the sweep (the numbers above are `vidprobe plan`'s); free the space or set the "
               "option named, or pass --no-plan-check to start anyway", err=True)
    raise typer.Exit(2)


@app.command()
def plan(
    config: Path = typer.Argument(..., help="Sweep YAML (the file `vidprobe sweep` takes)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set train.batch_size=4"),
    device: str = typer.Option("cuda", help="Where the sweep will run: cuda (bf16 defaults) or cpu (fp32)."),
    videos: int | None = typer.Option(None, help="Videos in the dataset, when it is not readable here (9:1 split)."),
    pca_k: int = typer.Option(256, "--pca-k", help="K of the pca:K codecs sized."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (bytes) instead of tables."),
    training_memory: bool = typer.Option(True, help="Trace a probe training step (the slow part of the plan)."),
) -> None:
    """What a sweep will cost before it runs: disk per codec, passes, steps, peak accelerator memory.

    Every model is built on the meta device (full size, no weights, no memory) and one extraction pass and one
    probe training step are traced, so the numbers are the code's own; see `vidprobe.pipeline.plan`.

    Example:  vidprobe plan configs/paper/wan2.1-t2v-1.3b_co3d.yaml --videos 1000
    """
    import json

    from vidprobe.pipeline.plan import plan_sweep
    from vidprobe.pipeline.sweep import SweepError, load_sweep

    if device not in ("cuda", "cpu"):
        typer.echo(f"error: --device must be cuda or cpu, got {device!r}", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_sweep(config, set_)
        p = plan_sweep(cfg, config=str(config), device=device, videos=videos, pca_k=pca_k, memory=training_memory)
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(p.to_dict(), indent=1, default=str))
    else:
        render_plan(p)
