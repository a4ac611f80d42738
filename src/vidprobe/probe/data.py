"""Training/evaluation samples: features of the sampled frames + their ground truth.

A sample reads ONLY the feature maps its frames need (FeatureStore slicing)
and only those frames' ground truth (dataset/labels file), resized to the
probe's output size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidprobe.data.clip import Clip
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
    features: torch.Tensor  # [S,h,w,C] float32
    gt: dict[str, torch.Tensor]


class ProbeDataset:
    """Samples for one (layer, timestep) of a feature store and a GT dataset split.

    Training draws frames with the reference sampler from a seed derived from
    ``(seed, epoch, video)``, so a resumed run sees exactly the same samples;
    evaluation uses the fixed-seed per-scene frames.
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
    ):
        self.store = store
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
        feats = self.store.read(vid, self.layer, self.timestep, frames)
        if isinstance(feats, tuple):
            feats = feats[0]
        clip = self.dataset.load(vid, frames)
        return ProbeSample(video=vid, frames=frames, features=feats.float(), gt=resize_ground_truth(clip, self.out_hw))


def collate(samples: list[ProbeSample]) -> dict:
    """Stack samples into a batch: features [B,S,h,w,C], gt tensors [B,S,...]."""
    return {
        "videos": [s.video for s in samples],
        "frames": [s.frames for s in samples],
        "features": torch.stack([s.features for s in samples]),
        "gt": {k: torch.stack([s.gt[k] for s in samples]) for k in samples[0].gt},
    }
