"""`vidprobe compress-check ORIG COMPRESSED`: the probe on both stores with the same seeds
(:mod:`vidprobe.pipeline.compress_check`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer()


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="--seeds") from None


@app.command("compress-check")
def compress_check(
    orig: Path = typer.Argument(..., help="The uncompressed feature store."),
    compressed: Path = typer.Argument(..., help="The same features through a codec (`vidprobe compress`)."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset with the ground truth of the stores' videos."),
    seeds: str = typer.Option("0,1", help="Training seeds, comma-separated (>= 2 for a seed-noise verdict)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Training YAML (TrainConfig fields) for every "
                                          "run; default: the tiny probe for 60 steps. features/dataset/out/seed are set per run."),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Override a training field, KEY=VALUE "
                                             "(e.g. --set max_steps=200 --set sampler.max_frame=25). Repeatable."),
    out: Path = typer.Option(Path("compress_check.json"), "--out", "-o", help="The JSON report (written atomically)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Run directories (reused by a rerun). Default: OUT "
                                        "without its suffix + '_runs'."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated metrics (default: every point, depth and "
                                          "camera metric)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train and score the probe on uncompressed and compressed features of the same clips with the same seeds.

    Prints bytes on disk of both stores and their ratio, and per metric the change with a paired bootstrap
    95% interval over clips, the seed noise (max - min over seeds of the uncompressed run) and a verdict:
    outside noise when the interval excludes 0 and, on every seed, the change has one sign and exceeds the seed noise.

    Example:  vidprobe compress-check feats/wan feats/wan_pca256 -d data/co3d --seeds 0,1,2 -o check.json
    """
    import json

    from vidprobe.atomic import atomic_write_text
    from vidprobe.config import ConfigError
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.pipeline.compress_check import DEFAULT_TRAIN, check_stores, format_check

    train = dict(DEFAULT_TRAIN)
    if config is not None:
        from vidprobe.config import read_yaml

        try:
            train = read_yaml(config)
        except (ConfigError, OSError) as e:
            raise typer.BadParameter(f"{config}: {e}", param_hint="--config") from None
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if names:
        from vidprobe.metrics.registry import METRICS

        bad = [m for m in names if m not in METRICS]
        if bad:
            raise typer.BadParameter(f"unknown metric(s) {bad}; known: {', '.join(METRICS)}", param_hint="--metrics")
    work = work or out.with_name(out.stem + "_runs")
    try:
        doc = check_stores(orig, compressed, dataset, work, _seeds(seeds), train=train, overrides=set_ or [],
                           metrics=names, progress=progress, echo=typer.echo)
    except (ConfigError, FeatureStoreError, FileNotFoundError, ValueError) as e:  # each names its file or option
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_check(doc))
    atomic_write_text(out, json.dumps(doc, indent=1, allow_nan=True))
    typer.echo(f"wrote {out}")
