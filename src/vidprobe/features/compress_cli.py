"""`vidprobe compress STORE --codec SPEC`: re-encode a feature store (:mod:`vidprobe.features.compress`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vidprobe import skips_cli

app = typer.Typer()


@app.command()
def compress(
    store: Path = typer.Argument(..., help="The feature store to encode (never changed without --in-place)."),
    codec: str = typer.Option(..., "--codec", help="pca:K, int8, fp8, pca:K+int8 or pca:K+fp8 ('none' decodes)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The new, encoded store (created; reused to resume)."),
    in_place: bool = typer.Option(False, "--in-place", help="Convert STORE itself, file by file (each replaced "
                                  "atomically once its encoded version is written)."),
    fit_videos: int = typer.Option(16, "--fit-videos", min=1, help="PCA: fit each key's basis on its first N videos."),
    max_vectors: int = typer.Option(65536, "--max-vectors", min=1, help="PCA: channel vectors sampled for the fit."),
    seed: int = typer.Option(0, help="PCA: seed of the channel sample."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help=skips_cli.ALLOW_SKIPS_HELP),
) -> None:
    """Encode every feature file with a codec; readers decode transparently (train / evaluate need no change).

    pca:K keeps K principal components of the channels, fitted on a sample of videos (recorded in the manifest);
    int8 and fp8 quantise per file and channel; pca:K+int8 does both. Rerunning resumes: files already encoded
    are skipped; unreadable files are listed and counted (exit 1 unless --allow-skips).

    Example:  vidprobe compress feats/wan --codec pca:256+int8 --out feats/wan_pca256
    """
    from vidprobe.features.compress import compress_store, store_bytes
    from vidprobe.features.layout import FeatureStoreError

    if (out is None) == (not in_place):
        raise typer.BadParameter("give --out NEW_STORE, or --in-place to convert STORE itself (not both)")
    try:
        before = store_bytes(store) if not in_place else None
        summary = compress_store(store, codec, out=out, in_place=in_place, fit_videos=fit_videos,
                                 max_vectors=max_vectors, seed=seed, progress=not quiet)
    except FeatureStoreError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.format())
    if before is not None:
        after = store_bytes(summary.dst)
        typer.echo(f"bytes on disk: {store} {before:,}, {summary.dst} {after:,} ({before / max(1, after):.2f}x)")
    skips_cli.finish(summary.broken, allow_skips, what="files")
