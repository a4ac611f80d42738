"""Extraction driver: dataset x backbone -> FeatureStore, resumable, shardable, lock-safe.

One ``backbone.extract`` call per video produces every requested (layer,
timestep); each lands in its own atomically written file. A rerun skips
videos whose files are all present and readable without touching the model;
a per-video lock file (non-blocking) keeps two processes from extracting the
same video; broken videos are skipped, logged and counted. Every feature file
records the data fingerprint of the frames it came from
(:mod:`vidprobe.data.fingerprint`; in its metadata, so it is written atomically
with the features by the process holding the video's lock), and features are
never added to a video whose stored fingerprint differs from the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from filelock import FileLock, Timeout

from vidprobe.data.fingerprint import FINGERPRINT_KEY, fingerprint_images, read_fingerprint
from vidprobe.features.file_format import write_feature_file
from vidprobe.features.layout import LOCK_DIR, FeatureStoreError, Key, dtype_name, key_dirname, tau_of, video_filename
from vidprobe.features.manifest import prepare_store, store_settings
from vidprobe.features.store import FeatureStore

if TYPE_CHECKING:
    from vidprobe.data.clip import Clip

log = logging.getLogger("vidprobe.features")

LOCKED = "locked by another process"
#: warn when a frame side is upsampled more than this factor for the model
UPSAMPLE_WARN = 2.0


@dataclass
class ExtractSummary:
    """What one extraction run did (this shard only)."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # video -> reason
    already_present: list[str] = field(default_factory=list)
    by_other: list[str] = field(default_factory=list)  # written by another process while this one ran
    bytes_written: int = 0
    seconds: float = 0.0
    shard: tuple[int, int] = (0, 1)
    total: int = 0  # videos in this shard

    def format(self) -> str:
        i, n = self.shard
        rate = len(self.done) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"extraction summary (shard {i}/{n}, {self.total} videos): {len(self.done)} extracted, "
            f"{len(self.already_present)} already present, {len(self.skipped)} skipped; "
            f"{_human(self.bytes_written)} written in {self.seconds:.1f} s ({rate:.2f} videos/s)"
        ]
        if self.by_other:
            lines.append(f"{len(self.by_other)} videos were written by another process while this one ran")
        busy = sorted(v for v, r in self.skipped.items() if r == LOCKED and v not in self.by_other)
        if busy:
            lines.append(f"{len(busy)} videos were still being written by another process when this one ended")
        lines += [f"  skipped {v}: {r}" for v, r in sorted(self.skipped.items()) if r != LOCKED or v in busy]
        return "\n".join(lines)

    def failed(self) -> dict[str, str]:
        """The videos skipped for a reason of their own (not because another process held them)."""
        return {v: r for v, r in self.skipped.items() if r != LOCKED}


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def shard_from_env() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) under torchrun / torch.distributed launchers; None otherwise."""
    ws = os.environ.get("WORLD_SIZE")
    rank = os.environ.get("RANK")
    if ws is None or rank is None:
        return None
    i, n = int(rank), int(ws)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"bad RANK={rank} / WORLD_SIZE={ws} in the environment")
    return i, n


def shard_videos(videos: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """Shard i of n takes every n-th video of the sorted list, starting at i (a partition)."""
    i, n = shard
    return sorted(videos)[i::n]


def _spec_and_factory(backbone):
    """Spec of a backbone given by name (without instantiating it) or by instance."""
    if isinstance(backbone, str):
        from vidprobe.backbones.base import registry

        reg = registry()
        if backbone not in reg:
            raise KeyError(f"unknown backbone {backbone!r}; known: {', '.join(sorted(reg)) or '(none registered)'}")
        return reg[backbone]
    return backbone.spec, None


def _source_name(dataset) -> str:
    return f"{getattr(dataset, 'name', type(dataset).__name__)}:{getattr(dataset, 'root', '')}"


@dataclass
class _Extraction:
    """One extraction run: what is fixed for every video, and the state carried from one video to the next.

    ``backbone`` is built from ``factory(**kwargs)`` only when a video needs
    work; ``model_failures`` counts videos that failed inside the model.
    """

    dataset: Any
    out: Path
    layers: list[int]
    timesteps: list[int | None]
    keys: list[Key]
    dtype: str
    spec: Any
    factory: Any
    kwargs: dict[str, Any]
    backbone: Any
    source: str
    store: FeatureStore
    lock_dir: Path
    num_frames: int | None
    fail_fast: int
    summary: ExtractSummary
    model_failures: int = 0
    input_hw: tuple[int, int] | None = None  # what frames are resized to (the spec's, or height/width given)
    resize_warned: bool = False
    started: float = field(default_factory=time.time)  # wall clock: files newer than this were written meanwhile
    codec: Any = None  # vidprobe.features.codec.Codec the files are encoded with (None: plain)
    encoders: dict = field(default_factory=dict)  # key -> codec Encoder (vidprobe.features.extract_codec)
    all_videos: list[str] = field(default_factory=list)  # every shard's videos, sorted (a PCA fit's sample)
    tap: str | None = None  # a submodule path inside each block, read instead of the block (backbones.hooks)

    def missing_keys(self, vid: str) -> list[Key]:
        return [k for k in self.keys if not self.store.is_valid(vid, *k)]

    def video(self, vid: str) -> None:
        """Extract one video unless it is done, locked by another process or broken (then skip and count)."""
        try:
            fname = video_filename(vid)
        except FeatureStoreError as e:
            _skip(self.summary, vid, str(e))
            return
        if not self.missing_keys(vid):
            self.summary.already_present.append(vid)
            if self._written_since_start(vid):
                self.summary.by_other.append(vid)
            return
        lock = FileLock(str(self.lock_dir / (fname + ".lock")), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            _skip(self.summary, vid, LOCKED, level=logging.INFO)
            return
        try:
            self._locked(vid, fname)
        finally:
            lock.release()

    def _locked(self, vid: str, fname: str) -> None:
        """The work on one video while holding its lock: load, run the model, write every missing key."""
        todo = self.missing_keys(vid)  # re-check under the lock: another process may have finished it
        if not todo:
            self.summary.already_present.append(vid)
            self.summary.by_other.append(vid)
            return
        _remove_stale_temps(self.out, self.keys, fname)  # left by a killed run; safe: we hold this video's lock
        try:
            nf = self.dataset.num_frames(vid)
            frames = None if self.num_frames is None or self.num_frames >= nf else list(range(self.num_frames))
            clip = self.dataset.load(vid, frames)
            # the frames the model sees, as the reader decodes them (not resized to a labels file)
            own = clip.images if "labels" not in clip.meta else self.dataset.load_images(vid, frames)
            fp = fingerprint_images(own, clip.frame_ids.tolist(), nf)
        except Exception as e:  # noqa: BLE001 - a broken video is skipped and counted
            _skip(self.summary, vid, f"load error: {type(e).__name__}: {e}")
            return
        problem = self._fingerprint_conflict(vid, todo, fp)
        if problem:
            _skip(self.summary, vid, problem)
            return
        fs, problem = self._features(clip)
        if problem:
            _skip(self.summary, vid, problem)
            return
        try:
            written = self._write(vid, fname, todo, fs, fp.to_json())
        except FeatureStoreError as e:  # non-finite features: a broken video, not a broken run
            _skip(self.summary, vid, str(e))
            return
        self.summary.bytes_written += written
        self.summary.done.append(vid)

    def _warn_upsampling(self, native_hw: tuple[int, int]) -> None:
        """One warning per run when frames are upsampled more than ``UPSAMPLE_WARN`` x in either side."""
        built = getattr(self.backbone, "input_hw", None)  # the model's own (a tiny one feeds a small size)
        target = built if isinstance(built, tuple) and len(built) == 2 else self.input_hw
        if self.resize_warned or not target or (built is None and self.kwargs.get("tiny")):
            return
        (h, w), (H, W) = native_hw, (int(target[0]), int(target[1]))
        if h > 0 and w > 0 and (H > UPSAMPLE_WARN * h or W > UPSAMPLE_WARN * w):
            self.resize_warned = True
            log.warning("frames are %dx%d but %s resizes them to %dx%d (%.1fx, %.1fx): far above their native size, "
                        "and slower; set --height/--width to change it", h, w, self.spec.name, H, W, H / h, W / w)

    def _features(self, clip: Clip) -> tuple[Any, str | None]:
        """``(FeatureSet, None)``, or ``(None, reason)``; aborts when the first ``fail_fast`` videos all fail."""
        if self.backbone is None:
            self.backbone = self.factory(**self.kwargs)
        self._warn_upsampling(tuple(clip.images.shape[-2:]))
        fs = None
        try:
            from vidprobe.backbones.hooks import TapError, tap_submodule

            with torch.inference_mode(), tap_submodule(self.tap) as tapped:
                fs = self.backbone.extract(clip.images, self.layers, self.timesteps, clip=clip)
            if self.tap and not tapped:
                raise TapError(f"--tap {self.tap!r}: backbone {self.spec.name} does not read its layers through "
                               "block hooks, so it cannot tap a submodule")
            problem = _check_featureset(fs, self.keys, clip.images.shape[0])
        except TapError:
            raise  # a wrong tap is the same for every video: stop at once
        except Exception as e:  # noqa: BLE001
            problem = f"extract error: {type(e).__name__}: {e}"
            self.model_failures += 1
            if self.fail_fast and self.model_failures >= self.fail_fast and not self.summary.done:
                raise RuntimeError(
                    f"the first {self.model_failures} videos all failed inside the model; last error: {problem}"
                ) from e
        return fs, problem

    def _written_since_start(self, vid: str) -> bool:
        """Whether a file of this (complete) video is newer than this run: another process wrote it meanwhile."""
        try:
            return max(os.stat(self.store.path(vid, *k)).st_mtime for k in self.keys) >= self.started
        except OSError:
            return False

    def _fingerprint_conflict(self, vid: str, todo: list[Key], fp) -> str | None:
        """A reason to refuse adding keys to a video whose stored features came from other frames, or None."""
        for k in self.store.keys():  # every key of the store, not only this run's
            if k in todo or not self.store.has(vid, *k):
                continue
            try:
                old = read_fingerprint(self.store.header(vid, *k).metadata, str(self.store.path(vid, *k)))
            except (FeatureStoreError, ValueError):
                continue
            if old is not None:
                diff = old.differences(count=fp.count, positions=range(len(fp.hashes)), frame_ids=fp.frame_ids,
                                       hw=fp.hw, hashes=fp.hashes)
                if len(old.hashes) != len(fp.hashes):
                    diff.insert(0, f"{len(old.hashes)} vs {len(fp.hashes)} frames extracted")
                if diff:
                    return (f"data differs from the features already stored for this video (store vs dataset): "
                            f"{'; '.join(diff)}; use another --out directory")
            return None
        return None

    def _write(self, vid: str, fname: str, todo: list[Key], fs, fingerprint: str) -> int:
        """Write one file per key in ``todo`` (each carrying the data fingerprint); returns the bytes written."""
        spec = self.spec
        meta_base = {"video_id": vid, "source": self.source, "backbone": spec.name, "frame_layout": spec.frame_layout,
                     FINGERPRINT_KEY: fingerprint}
        written = 0
        for layer, t in todo:
            meta = dict(meta_base, layer=str(layer), timestep="none" if t is None else str(t), tau=str(tau_of(t)))
            path = self.out / key_dirname(layer, t) / fname
            written += write_feature_file(path, fs.maps[(layer, t)], fs.frame_index, meta, self.dtype,
                                          encoder=self.encoders.get((layer, t)))
        return written


def _prepare(*, backbone_name, dataset, out, layers, timesteps, dtype, shard, backbone_kwargs, split, videos, max_videos,
             num_frames, fail_fast, codec=None, tap=None) -> tuple[_Extraction, list[str]]:
    """Check the arguments, create (or check) the store, and pick this shard's videos (sorted)."""
    if isinstance(dataset, (str, Path)):
        from vidprobe.data.open import open_dataset

        dataset = open_dataset(dataset)
    out = Path(out)
    layers = [int(x) for x in layers]
    timesteps = [None if t is None else _as_index(t) for t in timesteps] or [None]
    if not layers:
        raise ValueError("extract_dataset: no layers given")
    keys: list[Key] = [(layer, t) for layer in layers for t in timesteps]
    dt = dtype_name(dtype)
    kwargs = dict(backbone_kwargs or {})
    spec, factory = _spec_and_factory(backbone_name)
    backbone = None if isinstance(backbone_name, str) else backbone_name
    if shard is None:
        shard = shard_from_env() or (0, 1)
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {shard}: need 0 <= i < n")

    hw = (kwargs["height"], kwargs["width"]) if kwargs.get("height") and kwargs.get("width") else spec.input_hw
    settings = store_settings(
        backbone=spec.name,
        model_id=kwargs.get("model_id", spec.model_id),
        revision=kwargs.get("revision"),
        dtype=dt,
        input_hw=hw,
        frame_layout=spec.frame_layout,
        num_frames=num_frames,
        backbone_kwargs=kwargs,
    )
    if tap:  # recorded with the settings: a store holds one kind of tensor (resuming without it is refused)
        if -1 in layers:
            from vidprobe.backbones.hooks import TapError

            raise TapError(f"--tap {tap!r} reads a submodule of numbered blocks; layer -1 (the final output) has none")
        settings["tap"] = str(tap)
    source = _source_name(dataset)
    from vidprobe.features.codec import codec_record, parse_codec

    codec = parse_codec(codec)
    prepare_store(out, settings, keys, source=source, codec=codec_record(codec, dt))
    store = FeatureStore(out)
    lock_dir = out / LOCK_DIR
    lock_dir.mkdir(exist_ok=True)

    all_videos = sorted(videos if videos is not None else dataset.videos(split))
    if max_videos is not None:
        all_videos = all_videos[: max(0, int(max_videos))]
    mine = shard_videos(all_videos, (i, n))
    summary = ExtractSummary(shard=(i, n), total=len(mine))
    job = _Extraction(dataset=dataset, out=out, layers=layers, timesteps=timesteps, keys=keys, dtype=dt, spec=spec,
                      factory=factory, kwargs=kwargs, backbone=backbone, source=source, store=store, lock_dir=lock_dir,
                      num_frames=num_frames, fail_fast=fail_fast, summary=summary,
                      input_hw=tuple(hw) if hw and all(hw) else None, codec=codec, all_videos=all_videos, tap=tap)
    return job, mine


def extract_dataset(
    backbone_name,
    dataset,
    out: str | Path,
    layers: Sequence[int],
    timesteps: Sequence[int | None] = (None,),
    dtype: str = "fp16",
    shard: tuple[int, int] | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    *,
    split: str | None = None,
    videos: Sequence[str] | None = None,
    max_videos: int | None = None,
    num_frames: int | None = None,
    fail_fast: int = 3,
    codec: str | None = None,
    fit_videos: int = 16,
    tap: str | None = None,
) -> ExtractSummary:
    """Extract features of every video of ``dataset`` (this shard's part) into the store at ``out``.

    backbone_name   registered name (instantiated lazily, only if some video needs work) or a Backbone instance
    dataset         a VideoDataset, or a path opened with ``vidprobe.data.open.open_dataset``
    layers, timesteps   every (layer, timestep) pair is written; timesteps ``(None,)`` for non-diffusion models
    shard           (i, n): take every n-th video starting at i; default from RANK/WORLD_SIZE, else (0, 1)
    max_videos      use only the first K videos (sorted ids) before sharding
    num_frames      feed only the first K frames of each video (default: all frames)
    fail_fast       abort when this many videos in a row fail inside the model before any succeeds
                    (a wrong setting, not a broken video)
    codec           encode on write (``pca:K``, ``int8``, ``fp8``, ``pca:K+int8``; :mod:`vidprobe.features.codec`);
                    a PCA basis is first fitted on the first ``fit_videos`` videos (:mod:`~.extract_codec`)
    tap             read this submodule of each requested block instead of the block (``"attention"``,
                    ``"attn1"``; :func:`vidprobe.backbones.hooks.tap_submodule`); recorded in the manifest
    """
    t0 = time.perf_counter()
    job, mine = _prepare(backbone_name=backbone_name, dataset=dataset, out=out, layers=layers, timesteps=timesteps,
                         dtype=dtype, shard=shard, backbone_kwargs=backbone_kwargs, split=split, videos=videos,
                         max_videos=max_videos, num_frames=num_frames, fail_fast=fail_fast, codec=codec, tap=tap)
    summary = job.summary
    if job.codec is not None:
        from vidprobe.features.extract_codec import start_codec

        fitted = set(start_codec(job, fit_videos, progress))
        summary.done += [v for v in mine if v in fitted]
        mine = [v for v in mine if v not in fitted]
    i, n = summary.shard

    from tqdm.auto import tqdm

    redirect = contextlib.nullcontext()
    if progress:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()
    bar = tqdm(total=len(mine), desc=f"extract {job.spec.name} [{i}/{n}]", unit="video", disable=not progress,
               dynamic_ncols=True)
    stack = contextlib.ExitStack()
    stack.enter_context(redirect)
    try:
        for vid in mine:
            try:
                job.video(vid)
            finally:
                bar.update(1)
                bar.set_postfix(done=len(summary.done), present=len(summary.already_present), skipped=len(summary.skipped))
        # videos another process held: those it has finished by now were written by it while this one ran
        summary.by_other += [v for v, r in summary.skipped.items() if r == LOCKED and not job.missing_keys(v)]
    finally:
        bar.close()
        stack.close()
        summary.seconds = time.perf_counter() - t0
    if progress:
        print(summary.format())
    else:
        log.debug(summary.format())
    return summary


def _remove_stale_temps(out: Path, keys: list[Key], fname: str) -> None:
    prefix = f".{fname}."
    for layer, t in keys:
        d = out / key_dirname(layer, t)
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.name.startswith(prefix) and e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def _skip(summary: ExtractSummary, vid: str, reason: str, level: int = logging.WARNING) -> None:
    summary.skipped[vid] = reason
    log.log(level, "skipped %s: %s", vid, reason)


def _check_featureset(fs, keys: list[Key], T: int) -> str | None:
    """A reason to reject the FeatureSet of one video, or None."""
    missing = [k for k in keys if k not in fs.maps]
    if missing:
        return f"backbone returned no features for (layer, timestep) {missing} (got {sorted(fs.maps, key=str)})"
    fi = fs.frame_index
    if fi.dim() != 1 or fi.numel() != T:
        return f"frame_index has shape {tuple(fi.shape)}, expected [{T}] (one entry per input frame)"
    for k in keys:
        m = fs.maps[k]
        if not torch.isfinite(m).all():
            return f"NaN/Inf in features of (layer, timestep) {k}"
    return None


def _as_index(t) -> int:
    """Store keys are scheduler indices: a float in [0, 1] is tau (larger = more noise) -> index."""
    if isinstance(t, float) and 0.0 <= t <= 1.0 and not float(t).is_integer():
        return int(round((1.0 - t) * 1000))
    return int(t)
