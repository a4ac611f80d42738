"""Encoding on write during extraction (`vidprobe extract --codec SPEC`).

``int8`` and ``fp8`` need nothing beforehand: every file is encoded as it is written. A PCA codec needs its basis
before the first encoded file, so the first ``fit_videos`` videos of the whole (sorted, unsharded) video list are
extracted plain into a staging store (``<out>/.codec_fit``) and converted into the store by
:func:`vidprobe.features.compress.compress_store`, which fits the basis on exactly them -- the same sample, the
same code and hence the same numbers as ``vidprobe extract`` followed by ``vidprobe compress``. The staging store
is then removed and the remaining videos are encoded on write. One process fits (under a lock in ``.locks/``);
the other shards wait for its basis. The model built for the sample is kept for the rest of the run.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil

from filelock import FileLock

from vidprobe.features.codec import Encoder, basis_path, load_basis
from vidprobe.features.layout import LOCK_DIR
from vidprobe.features.manifest import prepare_store
from vidprobe.features.store import FeatureStore

__all__ = ["STAGING", "start_codec"]

log = logging.getLogger("vidprobe.features")

STAGING = ".codec_fit"


def start_codec(job, fit_videos: int, progress: bool) -> list[str]:
    """Give ``job`` (an extraction, :mod:`vidprobe.features.extract`) one encoder per key, fitting a PCA basis
    first where the store has none; returns the videos this call extracted (the fitting sample) or ``[]``."""
    codec, fitted = job.codec, []

    def missing() -> bool:
        return bool(codec.pca) and any(not basis_path(job.out, codec, *k).is_file() for k in job.keys)

    if missing():
        with FileLock(str(job.lock_dir / "codec-fit.lock")):  # other shards wait here for the basis
            if missing():
                fitted = _fit_on_sample(job, fit_videos, progress)
    job.encoders = {k: Encoder(codec, load_basis(basis_path(job.out, codec, *k), codec) if codec.pca else None)
                    for k in job.keys}
    return fitted


def _fit_on_sample(job, fit_videos: int, progress: bool) -> list[str]:
    from vidprobe.features.compress import compress_store
    from vidprobe.features.extract import ExtractSummary

    staging = job.out / STAGING
    ids = job.all_videos[:fit_videos]
    log.info("%s: fitting %s on the first %d videos", job.out, job.codec.name, len(ids))
    prepare_store(staging, job.store.settings, job.keys, source=job.source)
    fit = dataclasses.replace(job, out=staging, store=FeatureStore(staging), lock_dir=staging / LOCK_DIR, encoders={},
                              summary=ExtractSummary(total=len(ids)))
    fit.lock_dir.mkdir(exist_ok=True)
    for vid in ids:
        fit.video(vid)
    job.backbone, job.model_failures = fit.backbone, fit.model_failures
    done = compress_store(staging, job.codec.name, out=job.out, fit_videos=fit_videos, progress=progress,
                          note_source=False)
    job.summary.bytes_written += done.bytes_out
    shutil.rmtree(staging)
    return [v for v in ids if v in set(fit.summary.done) | set(fit.summary.already_present)]
