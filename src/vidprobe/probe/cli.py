"""`vidprobe train CONFIG` (`vidprobe evaluate` is orchestration: :mod:`vidprobe.pipeline.evaluate_cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML run config (see configs/); every field is documented in TrainConfig."),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override one config field, KEY=VALUE with a dotted key and a YAML value, "
        "e.g. --set optim.lr=3e-4 --set epochs=10. Repeatable."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint (exactly: same batches, "
                                "same final weights as an uninterrupted run)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a probe on frozen features (a run directory with logs and checkpoints).

    The run directory (config field 'out') gets config.yaml, run.json, log.jsonl + log.csv (one row per step),
    checkpoints/step_*/ (safetensors weights, optimizer and RNG state) and last/best pointers.
    Multi-GPU: launch with torchrun; batch_size is per process.

    Example:  vidprobe train configs/example.yaml --set epochs=2 --set out=runs/try
    """
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.probe.config import ProbeConfigError
    from vidprobe.probe.losses import LossConfigError, NonFiniteLossError
    from vidprobe.probe.train import ConfigError, load_config
    from vidprobe.probe.train import train as run_train

    try:
        cfg = load_config(config, set_ or [])
        res = run_train(cfg, resume=resume, progress=progress)
    except (ConfigError, ProbeConfigError, LossConfigError, FeatureStoreError, NonFiniteLossError, FileNotFoundError) as e:
        _fail(e)
    except ValueError as e:  # dataset / sampler errors name their file and field
        _fail(e)
    if res.already_finished:
        typer.echo(f"{res.run_dir}: already finished at step {res.steps} (its last checkpoint is the final step); "
                   "nothing to train")
        typer.echo(f"last checkpoint: {res.last_checkpoint}")
        return
    typer.echo(f"trained {res.steps} steps in {res.run_dir}: final loss {res.final_loss:.4f}"
               + (f", eval loss {res.eval_loss:.4f}" if res.eval_loss is not None else ""))
    typer.echo(f"last checkpoint: {res.last_checkpoint}")
    typer.echo(f"best checkpoint: {res.best_checkpoint}")
