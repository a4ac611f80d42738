"""`vidprobe extract`: dataset x backbone -> feature store."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

from vidprobe import skips_cli
from vidprobe.pipeline import launcher_cli

app = typer.Typer()


def _ints(text: str | None, what: str) -> list[int | None] | None:
    if text is None:
        return None
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() == "none":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            try:
                tau = float(part)  # tau in [0, 1] (larger = more noise) -> scheduler index
            except ValueError:
                tau = -1.0
            if what != "--timesteps" or not 0.0 <= tau <= 1.0:
                raise typer.BadParameter(f"{what}: expected comma-separated integers, got {part!r}") from None
            out.append(int(round((1.0 - tau) * 1000)))
    if not out:
        raise typer.BadParameter(f"{what}: empty list")
    return out


def parse_backbone_args(items: list[str]) -> dict:
    """``["resize=pil-lanczos", "dtype=fp32"]`` -> ``{"resize": "pil-lanczos", "dtype": "fp32"}`` (values read as YAML)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--backbone-arg")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            out[key] = text
    return out


def backbone_kwargs_for(factory, name: str, options: dict) -> dict:
    """Keep the options the user set; refuse one the backbone does not take.

    The options a backbone takes are those its registered spec declares (``spec.options``, from its family's
    build options: :mod:`vidprobe.backbones.builder`); see :func:`vidprobe.backbones.base.accepted_options`.
    """
    from vidprobe.backbones.base import accepted_options, registry

    given = {k: v for k, v in options.items() if v is not None and v is not False}
    reg = registry()
    accepted = accepted_options(reg[name][0] if name in reg else None, factory)
    if accepted is None:  # a factory taking any keyword
        return given
    flag = {"model_id": "--model-id", "revision": "--revision", "tiny": "--tiny", "device": "--device",
            "height": "--height", "width": "--width"}
    bad = [k for k in given if k not in accepted]
    if bad:
        raise typer.BadParameter(
            f"backbone {name!r} does not take {', '.join(flag.get(k, k) for k in bad)} "
            f"(it takes: {', '.join(accepted) or 'no options'})"
        )
    return given


def unknown_backbone_message(name: str, known: list[str]) -> str:
    from vidprobe.backbones.base import unknown_backbone_message as message

    return message(name, known)


def check_request(spec, layers: list, timesteps: list, layers_text: str | None, timesteps_text: str | None) -> None:
    """Refuse, once and before any model is built, layers outside the spec's blocks and a timestep for a model
    without diffusion time (the registry spec's ``num_layers`` / ``default_timestep``)."""
    n = int(spec.num_layers or 0)
    if n > 0:
        bad = [x for x in layers if x != -1 and not 1 <= x <= n]
        if bad:
            given = layers_text if layers_text is not None else ",".join(str(x) for x in layers)
            raise typer.BadParameter(f"--layers {given}: {spec.name} has blocks 1..{n} (or -1 for the final output)")
    if spec.default_timestep is None and any(t is not None for t in timesteps):
        raise typer.BadParameter(f"--timesteps {timesteps_text}: {spec.name} has no diffusion time; leave --timesteps "
                                 "out (or give 'none')")


def check_out_path(path: Path, flag: str) -> None:
    """Refuse an output directory that is a regular file or lies under one, naming that file."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a regular file" if p == path else f"lies under {p}, a regular file"
                raise typer.BadParameter(f"{flag} {path}: {what}, not a directory")
            return


def _build_kwargs(factory, backbone: str, options: dict, backbone_arg: list[str] | None) -> dict:
    """The builder's keyword arguments from the flags (``options``) and ``-a KEY=VALUE`` (never both for one key)."""
    if options["device"] == "cuda" and os.environ.get("LOCAL_RANK") is not None:
        options["device"] = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if (options["height"] is None) != (options["width"] is None):
        raise typer.BadParameter("give both --height and --width, or neither")
    for k, v in parse_backbone_args(backbone_arg or []).items():
        if options.get(k) not in (None, False):
            raise typer.BadParameter(f"{k} is given twice (as a flag and as --backbone-arg)", param_hint="--backbone-arg")
        options[k] = v
    return backbone_kwargs_for(factory, backbone, options)


@app.command()
def extract(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone name (see `vidprobe backbones`), or hf:<hub repo id or local folder> for any "
    "transformers vision/video encoder."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset directory (any format `vidprobe` reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature store directory (created; reused to resume)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated block indices, e.g. 10,20. Default: the backbone's reference layer."),
    timesteps: Optional[str] = typer.Option(
        None, help="Comma-separated scheduler indices of 1000 (tau = 1 - t/1000), e.g. 249,749, or tau values in "
        "[0,1] such as 0.25 (converted to an index); 'none' for models "
        "without diffusion time. Default: the backbone's reference timestep."
    ),
    dtype: str = typer.Option("fp16", help="Storage dtype: fp16, bf16 or fp32."),
    shard: Optional[str] = typer.Option(None, help="i/n: this process takes every n-th video starting at i. "
                                        "Default: RANK/WORLD_SIZE under torchrun, else 0/1."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (cuda:LOCAL_RANK under torchrun). Default: the backbone's."),
    model_id: Optional[str] = typer.Option(None, "--model-id", help="Hub id or local path of the weights (overrides the backbone's)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (commit/tag) of the weights."),
    tiny: bool = typer.Option(False, "--tiny", help="Random weights at a tiny config (tests and dry runs; no download)."),
    max_videos: Optional[int] = typer.Option(None, "--max-videos", help="Only the first K videos (sorted ids), before sharding."),
    num_frames: Optional[int] = typer.Option(None, "--num-frames", help="Feed only the first K frames of each video."),
    height: Optional[int] = typer.Option(None, help="Input height fed to the model (default: the backbone's)."),
    width: Optional[int] = typer.Option(None, help="Input width fed to the model (default: the backbone's)."),
    split: Optional[str] = typer.Option(None, help="Only this split of the dataset (train/test); default all videos."),
    backbone_arg: Optional[list[str]] = typer.Option(
        None, "--backbone-arg", "-a", help="KEY=VALUE passed to the backbone's builder (repeatable; YAML values), e.g. "
        "-a resize=pil-lanczos -a dtype=fp32 -a checkpoint_key=encoder. `vidprobe backbones` lists each one's options."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    codec: Optional[str] = typer.Option(None, "--codec", help="Encode on write: pca:K, int8, fp8, pca:K+int8 (see "
                                        "`vidprobe compress`); a PCA basis is fitted on the first --fit-videos videos."),
    fit_videos: int = typer.Option(16, "--fit-videos", min=1, help="Videos a PCA codec's basis is fitted on."),
    tap: Optional[str] = typer.Option(None, "--tap", help="Read this submodule of each requested block instead of the "
                                      "block's output, e.g. attention or attn1 (a dotted path inside the block); "
                                      "recorded in the manifest: one tap per store."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
    launcher: Optional[str] = launcher_cli.LAUNCHER, array: Optional[int] = launcher_cli.ARRAY, wait: bool = launcher_cli.WAIT,
    partition: Optional[str] = launcher_cli.PARTITION, gpus: Optional[int] = launcher_cli.GPUS,
    cpus: Optional[int] = launcher_cli.CPUS, time_limit: Optional[str] = launcher_cli.TIME, qos: Optional[str] = launcher_cli.QOS,
    account: Optional[str] = launcher_cli.ACCOUNT, mem: Optional[str] = launcher_cli.MEM, log_dir: Optional[Path] = launcher_cli.LOG_DIR,
    sbatch: Optional[list[str]] = launcher_cli.SBATCH, max_parallel: Optional[int] = launcher_cli.MAX_PARALLEL,
) -> None:
    """Extract frozen-model features of every video into a resumable feature store.

    Writes one safetensors file per (video, layer, timestep) plus DIR/manifest.json.
    Rerunning the same command resumes: finished videos are skipped without
    running the model. A store written with another model or other settings is
    refused. Several processes (--shard i/n, or torchrun) may write into one store.
    --launcher slurm --array N submits N jobs (task i: shard i/N); pre-empted jobs are requeued and resume.

    Examples (the first on the built-in data of `vidprobe prepare synthetic data/synth`, tiny random weights):
      vidprobe extract -b dinov2-small --tiny --height 56 --width 112 -d data/synth -o feats/synth_dinov2
      vidprobe extract -b wan2.1-t2v-1.3b -d data/co3d_ref -o feats/wan --layers 11,21 --timesteps 249,749
    """
    from vidprobe.backbones.base import registry
    from vidprobe.backbones.hooks import TapError
    from vidprobe.features.extract import extract_dataset, parse_shard
    from vidprobe.features.store import FeatureStoreError, dtype_name

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reg = registry()
    if backbone not in reg:
        raise typer.BadParameter(unknown_backbone_message(backbone, sorted(reg)), param_hint="--backbone")
    try:
        spec, factory = reg[backbone]  # a prefixed name (hf:<repo-or-path>) is resolved here
    except (KeyError, ValueError, OSError) as e:
        raise typer.BadParameter(f"cannot resolve backbone {backbone!r}: {e}", param_hint="--backbone") from None
    try:
        dtype = dtype_name(dtype)
    except FeatureStoreError as e:
        raise typer.BadParameter(str(e), param_hint="--dtype") from None
    lay = _ints(layers, "--layers") or [spec.default_layer]
    if None in lay:
        raise typer.BadParameter("layers must be integers", param_hint="--layers")
    ts = _ints(timesteps, "--timesteps") or [spec.default_timestep]
    check_request(spec, lay, ts, layers, timesteps)
    check_out_path(out, "--out")
    from vidprobe.features.codec import parse_codec

    try:
        parse_codec(codec)
    except FeatureStoreError as e:  # CodecError: an unknown spec, or fp8 without float8 support
        raise typer.BadParameter(str(e), param_hint="--codec") from None
    lcfg = launcher_cli.extract_settings(shard, array, launcher=launcher, partition=partition, gpus=gpus, cpus=cpus,
                                         time=time_limit, account=account, qos=qos, mem=mem, sbatch=sbatch,
                                         max_parallel=max_parallel, log_dir=log_dir)
    if lcfg.backend != "none" and codec is not None:
        raise typer.BadParameter("--codec with --launcher: extract, then run `vidprobe compress`", param_hint="--codec")
    sh = None
    if shard is not None:
        try:
            sh = parse_shard(shard)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--shard") from None
    options = {"model_id": model_id, "revision": revision, "tiny": tiny, "device": device, "height": height, "width": width}
    kwargs = _build_kwargs(factory, backbone, options, backbone_arg)
    from vidprobe.data.open import open_dataset

    try:
        ds = open_dataset(dataset)
    except (ValueError, OSError) as e:  # DatasetError is a ValueError naming the file
        typer.echo(f"error: cannot open dataset {dataset}: {e}", err=True)
        raise typer.Exit(2) from None
    if lcfg.backend != "none":  # submit jobs over the same shards and locks, then report (and wait)
        return launcher_cli.extract_jobs(lcfg, array, wait, allow_skips, backbone=backbone, dataset=str(dataset),
                                         out=str(out), layers=lay, timesteps=ts, dtype=dtype, backbone_kwargs=kwargs,
                                         split=split, max_videos=max_videos, num_frames=num_frames)
    try:
        summary = extract_dataset(
            backbone, ds, out, lay, ts, dtype=dtype, shard=sh, backbone_kwargs=kwargs, progress=not quiet,
            split=split, max_videos=max_videos, num_frames=num_frames, codec=codec, fit_videos=fit_videos, tap=tap,
        )
    except (FeatureStoreError, TapError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if quiet:
        typer.echo(summary.format())
    skips_cli.finish(summary.failed(), allow_skips)  # videos another process holds are its own, not skips
