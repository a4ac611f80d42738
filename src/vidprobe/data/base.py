"""Dataset interface shared by every reader (synthetic/native, CO3Dv2, DL3DV)."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from vidprobe.data.clip import Clip


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the field."""


@dataclass
class ScanReport:
    """Result of walking a dataset: usable videos and the skipped ones with reasons."""

    ok: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{len(self.ok)} videos usable, {len(self.skipped)} skipped"]
        lines += [f"  skipped {k}: {v}" for k, v in sorted(self.skipped.items())]
        return "\n".join(lines)


class VideoDataset(ABC):
    """A directory of videos with multi-view ground truth.

    ``load(video_id, frames)`` returns a :class:`Clip` with OpenCV cameras; only
    the requested frames are read from disk.
    """

    name: str = "dataset"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @abstractmethod
    def videos(self, split: str | None = None) -> list[str]:
        """Video ids, optionally of one split (``train`` / ``test``)."""

    @abstractmethod
    def num_frames(self, video_id: str) -> int:
        """Number of frames of a video."""

    @abstractmethod
    def load(self, video_id: str, frames: Sequence[int] | None = None) -> Clip:
        """Load frames (all when ``None``) of a video as a Clip."""

    def load_images(self, video_id: str, frames: Sequence[int] | None = None) -> torch.Tensor:
        """Only the RGB frames ``[T,3,H,W]`` in [0,1] (what feature extraction needs)."""
        return self.load(video_id, frames).images

    def scan(self, split: str | None = None, deep: bool = False) -> ScanReport:
        """Check every video can be opened (every frame, and that all have one size, when ``deep``); skip and
        count broken ones, never crash."""
        rep = ScanReport()
        for vid in self.videos(split):
            try:
                n = self.num_frames(vid)
                if n < 1:
                    raise DatasetError("no frames")
                if deep:
                    self.check_frame_sizes(vid, {i: tuple(self.load(vid, [i]).images.shape[-2:]) for i in range(n)})
                else:
                    self.load(vid, [0])
            except Exception as e:  # noqa: BLE001 - a scan reports, it does not die
                rep.skipped[vid] = f"{type(e).__name__}: {e}"
            else:
                rep.ok.append(vid)
        return rep

    def check_frame_sizes(self, video_id: str, sizes: dict[int, tuple[int, int]]) -> None:
        """``DatasetError`` naming the first frame (0-based position) whose size differs from the video's others."""
        if not sizes:
            return
        bad, common = odd_frames(sizes)
        if bad:
            h, w = sizes[bad[0]]
            raise DatasetError(f"{self.root / video_id}: frame {bad[0]} is {h}x{w}, the video's other frames are "
                               f"{common[0]}x{common[1]} ({len(bad)} frame(s) of another size)")


def odd_frames(sizes: dict[int, tuple[int, int]]) -> tuple[list[int], tuple[int, int]]:
    """Frames whose ``(H, W)`` differs from the video's most common size, and that size."""
    counts: dict[tuple[int, int], int] = {}
    for hw in sizes.values():
        counts[hw] = counts.get(hw, 0) + 1
    common = max(counts, key=lambda hw: (counts[hw], -min(i for i, v in sizes.items() if v == hw)))
    return sorted(i for i, hw in sizes.items() if hw != common), common


def split_videos(ids: Sequence[str], test_fraction: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """The reference split: shuffle video ids with ``seed`` and hold out ``test_fraction`` (9:1)."""
    ids = sorted(ids)
    rng = random.Random(seed)
    shuffled = ids[:]
    rng.shuffle(shuffled)
    n_test = max(1, round(len(ids) * test_fraction)) if len(ids) > 1 else 0
    test = set(shuffled[:n_test])
    return {"train": [i for i in ids if i not in test], "test": [i for i in ids if i in test]}
