"""Training/evaluation samples: features of the sampled frames + their ground truth, and the loader of batches.

A sample reads ONLY the feature maps its frames need (FeatureStore slicing)
and only those frames' ground truth (dataset/labels file), resized to the
probe's output size. Features stay in the store's dtype (fp16 / bf16) all the
way through the DataLoader: converting to fp32 and the NaN/Inf check happen on
the device, batched (:func:`vidprobe.probe.inputs.to_device`), so the CPU per
sample only reads bytes and stacks them.
"""

from __future__ import annotations

import copy
import random
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, get_worker_info

from vidprobe.data.clip import Clip
from vidprobe.data.fingerprint import check_store_data
from vidprobe.data.sampling import FrameSampler, stable_seed


def resize_ground_truth(clip: Clip, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """GT of a clip at the probe's output size.

    Depth, validity, confidence and points are resampled with nearest
    neighbour (no mixing of depths across edges); intrinsics are scaled by
    the size ratio (pixel centres at integer coordinates, so
    ``c' = (c + 0.5) s - 0.5``). Points stay the exact world points of the
    sampled source pixels.
    """
    T, _, H, W = clip.images.shape
    oh, ow = out_hw
    pts = clip.world_points()
    conf = clip.confidence if clip.confidence is not None else torch.ones_like(clip.depth)
    K = clip.intrinsics.clone()
    if (oh, ow) != (H, W):
        def nn(x):
            return F.interpolate(x, size=(oh, ow), mode="nearest-exact")

        depth = nn(clip.depth[:, None])[:, 0]
        valid = nn(clip.valid[:, None].float())[:, 0] > 0.5
        conf = nn(conf[:, None])[:, 0]
        pts = nn(pts.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        sx, sy = ow / W, oh / H
        K[:, 0, 0] *= sx
        K[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
        K[:, 1, 1] *= sy
        K[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
        images = F.interpolate(clip.images, size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)
    else:
        depth, valid, images = clip.depth, clip.valid, clip.images
    valid = valid & (depth > 0)
    return {
        "points": pts.float(),
        "depth": depth.float(),
        "valid": valid,
        "confidence": conf.float(),
        "extrinsics": clip.extrinsics.float(),
        "intrinsics": K.float(),
        "images": images.float().clamp(0, 1),
    }


@dataclass
class ProbeSample:
    video: str
    frames: list[int]
    features: torch.Tensor  # [S,h,w,C] in the store's dtype (fp16 / bf16 / fp32), not yet checked for NaN/Inf
    gt: dict[str, torch.Tensor]
    source: str  # the feature file (named when a feature is NaN/Inf)
    maps: list[int]  # the feature map that served each frame


#: why a video of the split is left out: the store has no features for it (at this layer and timestep)
NO_FEATURES = "no features in the store"


class ProbeDataset:
    """Samples for one (layer, timestep) of a feature store and a GT dataset split.

    Training draws frames with the reference sampler from a seed derived from
    ``(seed, epoch, video)``, so a resumed run sees exactly the same samples;
    evaluation uses the fixed-seed per-scene frames. ``ds[(i, epoch)]`` is
    ``ds.get(i, epoch)`` (the DataLoader's keys, see :class:`StepBatches`).

    It reads through a copy of ``store`` with the store's CPU NaN/Inf check off: the
    batch is checked on the device instead (:func:`vidprobe.probe.inputs.to_device`),
    with the same message.

    The store's data fingerprints are checked against ``dataset`` (:func:`~vidprobe.data.fingerprint.check_store_data`:
    every video up front, each sample's frames as it is read); a mismatch raises ``DataMismatchError`` unless
    ``allow_data_mismatch``.
    """

    def __init__(
        self,
        store,
        layer: int,
        timestep: int | None,
        dataset,
        split: str | None,
        sampler: FrameSampler,
        out_hw: tuple[int, int],
        seed: int = 42,
        videos: list[str] | None = None,
        allow_data_mismatch: bool = False,
    ):
        self.store = _device_checked(store)
        self.layer = layer
        self.timestep = timestep
        self.dataset = dataset
        self.sampler = sampler
        self.out_hw = tuple(out_hw)
        self.seed = seed
        have = set(store.videos(layer, timestep))
        wanted = videos if videos is not None else dataset.videos(split)
        self.videos = [v for v in wanted if v in have]
        self.missing = [v for v in wanted if v not in have]
        if not self.videos:
            raise ValueError(
                f"no video of split {split!r} of {dataset.root} has features for layer {layer}, "
                f"timestep {timestep} in {store.root} ({len(self.missing)} missing)"
            )
        # the features must come from this dataset's frames (vidprobe.data.fingerprint): checked up front, per sample
        self.data_check = check_store_data(dataset, self.videos, lambda v: store.header(v, layer, timestep).metadata,
                                           str(store.root), allow=allow_data_mismatch)

    def __len__(self) -> int:
        return len(self.videos)

    def frames_for(self, i: int, epoch: int | None) -> list[int]:
        vid = self.videos[i]
        n = self.dataset.num_frames(vid)
        if epoch is None:
            return self.sampler.eval_frames(vid, n, seed=self.seed)
        return self.sampler.sample(n, random.Random(stable_seed(self.seed, epoch, vid, scheme="crc32")))

    def get(self, i: int, epoch: int | None = None) -> ProbeSample:
        vid = self.videos[i]
        frames = self.frames_for(i, epoch)
        feats, maps = self.store.read(vid, self.layer, self.timestep, frames, dtype=None, return_maps=True)
        clip = self.dataset.load(vid, frames)
        self.data_check.sample(vid, frames, clip)
        return ProbeSample(video=vid, frames=frames, features=feats, gt=resize_ground_truth(clip, self.out_hw),
                           source=str(self.store.path(vid, self.layer, self.timestep)), maps=maps.tolist())

    def __getitem__(self, key: tuple[int, int | None]) -> ProbeSample | _Failed:
        """``get(*key)``; in a DataLoader worker an error comes back as a value, raised by :func:`batches`."""
        try:
            return self.get(*key)
        except Exception as e:  # noqa: BLE001 - re-raised in the training process, type and message intact
            if get_worker_info() is None:
                raise
            return _Failed.of(e)


def _device_checked(store):
    """``store`` without its CPU NaN/Inf check (a copy: the caller's store keeps checking its own reads)."""
    if not getattr(store, "check_finite", False):
        return store
    store = copy.copy(store)  # FeatureStore pickles and copies without its lock and header cache
    store.check_finite = False
    return store


class _Failed:
    """The exception of a sample read in a DataLoader worker, carried to the training process whole.

    DataLoader's own re-raise puts the worker's traceback into the message (what the CLI prints); this keeps
    the original type and message, with the worker's traceback as a note.
    """

    def __init__(self, error: BaseException):
        self.error = error

    @classmethod
    def of(cls, e: Exception) -> _Failed:
        e.add_note("in a DataLoader worker:\n" + "".join(traceback.format_exception(e)).rstrip())
        try:  # what unpickling it in the main process will do: call its type with its args (BaseException.__reduce__)
            rebuild, args = e.__reduce__()[:2]
            rebuild(*args)
        except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt travels as text
            e = RuntimeError(f"{type(e).__name__}: {e}")
        return cls(e)


def collate(samples: list[ProbeSample | _Failed]) -> dict:
    """Stack samples into a batch: features [B,S,h,w,C] (stored dtype), gt tensors [B,S,...]; the feature file and
    map ids of each sample (``sources``, ``maps``). A failed sample makes the batch ``{"error": exception}``."""
    for s in samples:
        if isinstance(s, _Failed):
            return {"error": s.error}
    return {
        "videos": [s.video for s in samples],
        "frames": [s.frames for s in samples],
        "sources": [s.source for s in samples],
        "maps": [s.maps for s in samples],
        "features": torch.stack([s.features for s in samples]),
        "gt": {k: torch.stack([s.gt[k] for s in samples]) for k in samples[0].gt},
    }


class StepBatches:
    """The DataLoader keys ``(index, epoch)`` of this rank's slice of each global batch, steps ``start..end-1``.

    Step ``k`` of epoch ``e`` takes positions ``k*G .. k*G+G-1`` (mod n) of a permutation seeded by
    ``(seed, e)``, ``G = batch_size * world``; rank ``r`` takes its ``batch_size`` of them. Only the step
    counts, so a resumed run (``start`` = its checkpoint's step) draws the same batches.
    """

    def __init__(self, n: int, batch_size: int, steps_per_epoch: int, seed: int, start: int, end: int,
                 world: int = 1, rank: int = 0):
        self.n, self.batch_size, self.steps_per_epoch, self.seed = n, batch_size, steps_per_epoch, seed
        self.start, self.end, self.world, self.rank = start, end, world, rank

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm: list[int] = []
        perm_epoch = None
        gb = self.batch_size * self.world
        for step in range(self.start, self.end):
            epoch = step // self.steps_per_epoch
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
            k = step % self.steps_per_epoch
            gidx = [perm[(k * gb + j) % len(perm)] for j in range(gb)]
            yield [(i, epoch) for i in gidx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]]


class EvalBatches:
    """The DataLoader keys ``(index, None)`` of an evaluation pass: the dataset in order, ``batch_size`` at a time."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, None]]]:
        for i in range(0, self.n, self.batch_size):
            yield [(j, None) for j in range(i, min(self.n, i + self.batch_size))]


def make_loader(ds: ProbeDataset, keys, loader, device: torch.device, seed: int = 0) -> DataLoader:
    """A DataLoader of collated CPU batches of ``ds`` for the key batches ``keys`` (:class:`StepBatches`,
    :class:`EvalBatches`), with the :class:`~vidprobe.probe.train_config.LoaderConfig` ``loader``'s workers,
    prefetch and pinning (pinned by default on CUDA). Its own generator leaves the global RNG untouched."""
    workers = loader.num_workers()
    pin = loader.pin_memory if loader.pin_memory is not None else device.type == "cuda"
    kw = {"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers} if workers else {}
    return DataLoader(ds, batch_sampler=keys, num_workers=workers, collate_fn=collate,
                      pin_memory=pin and torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed), **kw)


def batches(loader) -> Iterator[dict]:
    """The loader's batches; a sample that failed in a worker raises its own exception here."""
    for b in loader:
        if "error" in b:
            raise b["error"]
        yield b
