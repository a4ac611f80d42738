"""`vidprobe train CONFIG` (`vidprobe evaluate` is orchestration: :mod:`vidprobe.pipeline.evaluate_cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

from vidprobe import skips_cli
from vidprobe.data import cli as data_cli

app = typer.Typer()


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def named_field(e: Exception) -> Exception:
    """A layer / timestep choice refused by :func:`vidprobe.probe.inputs.open_inputs`, named as this command's config
    field (`vidprobe consistency` names its flags instead)."""
    path = getattr(e, "path", "")
    if path in ("layer", "timestep") and "config field" not in str(e):
        return type(e)(f"config field {path!r} (or --set {path}=...): {e}", path)
    return e


def run_name(features: str, layer: int, timestep: int | None) -> str | None:
    """``<backbone>_L<layer>_T<timestep>`` (``Llast``, ``Tnone``: the prefix of a sweep cell's name) from the
    feature store's manifest, the layer and timestep resolved as training resolves them (the store's only one when
    unset); None when the store cannot tell (training then reports why)."""
    import re

    from vidprobe.features.store import FeatureStore, FeatureStoreError

    try:
        store = FeatureStore(features)
        keys = store.keys()
    except (FeatureStoreError, OSError, ValueError):
        return None
    backbone = str(store.settings.get("backbone") or "")
    if layer is None:
        if len({k[0] for k in keys}) != 1:
            return None  # training refuses the ambiguous choice
        layer = keys[0][0]
    stamps = {k[1] for k in keys if k[0] == layer}
    if timestep is None and None not in stamps:
        if len(stamps) != 1:
            return None
        timestep = next(iter(stamps))
    if not backbone:
        return None
    tag = re.sub(r"[^A-Za-z0-9._+-]+", "_", backbone).strip("_")
    return f"{tag}_L{'last' if layer == -1 else layer}_T{'none' if timestep is None else timestep}"


def run_name_defaults(config: Path, overrides: list[str], cfg) -> dict:
    """``name`` and ``out`` for a config (and ``--set``) that leave them out: :func:`run_name` and runs/<name>."""
    from vidprobe.config import read_yaml

    given = set(read_yaml(config)) | {o.partition("=")[0].strip() for o in overrides}
    base = {}
    if "name" not in given:
        derived = run_name(cfg.features, cfg.layer, cfg.timestep)
        if derived is not None:
            base["name"] = derived
    if "out" not in given and ("name" in given or base):
        base["out"] = f"runs/{base.get('name', cfg.name)}"
    return base


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
    allow_data_mismatch: bool = data_cli.ALLOW_DATA_MISMATCH,
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Train a probe on frozen features (a run directory with logs and checkpoints).

    The run directory (config field 'out') gets config.yaml, run.json, log.jsonl + log.csv (one row per step),
    checkpoints/step_*/ (safetensors weights, optimizer and RNG state) and last/best pointers.
    Multi-GPU: launch with torchrun; batch_size is per process.
    Features extracted from other data than the dataset's (same video ids, other frames) are refused unless
    --allow-data-mismatch; videos of the split without features are left out, and then the command exits 1
    unless --allow-skips.

    A config that leaves out 'name' and 'out' names the run after the feature store's backbone, layer and timestep
    as a sweep names its cells: runs/<backbone>_L<layer>_T<timestep> (e.g. runs/dinov2-small_Llast_Tnone).

    Examples (the first on the built-in data of README's "first hour" block):
      vidprobe train configs/synthetic_train.yaml --set epochs=1 --set out=runs/try
      vidprobe train configs/example_train.yaml --set features=feats/wan14b --set layer=21 --set timestep=749
    """
    from vidprobe.features.store import FeatureStoreError
    from vidprobe.probe.config import ProbeConfigError
    from vidprobe.probe.losses import LossConfigError, NonFiniteLossError
    from vidprobe.probe.train import ConfigError, load_config
    from vidprobe.probe.train import train as run_train

    try:
        cfg = load_config(config, set_ or [])
        base = run_name_defaults(config, set_ or [], cfg)
        if base:  # explicit values in the config or --set win over the derived ones
            cfg = load_config(config, set_ or [], base=base)
        res = run_train(cfg, resume=resume, progress=progress, allow_data_mismatch=allow_data_mismatch)
    except (ConfigError, ProbeConfigError, LossConfigError, FeatureStoreError, NonFiniteLossError, FileNotFoundError) as e:
        _fail(named_field(e))
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
    skips_cli.finish(res.skipped or {}, allow_skips)
