"""Data fingerprints: which frames a video's features were computed from, and the check that a dataset still has them.

A feature store keyed by video id cannot tell two datasets that reuse the same ids apart (every synthetic dataset
has ``orbit_00000``). At extraction each feature file therefore records, in its string metadata under
:data:`FINGERPRINT_KEY`, the :class:`Fingerprint` of the frames the model saw: the video's frame count as the
dataset exposed it, the source frame ids and the image size of the extracted frames, and one content hash per
frame. Per frame, because training reads a few sampled frames of a clip: :meth:`DataCheck.sample` checks exactly
the frames a sample read, from the images it decoded anyway (the hash costs a strided subsample and a blake2b of
a few KB, nothing next to the decode or the model), while :func:`check_store_data` checks every video up front
(frame count, and size and content of its first and last extracted frame) so a wrong dataset is refused before
training starts.

The content hash is blake2b (8 bytes) over the frame size and the uint8-rounded pixels of a strided subsample (at
most :data:`SAMPLES` x :data:`SAMPLES` per frame); it depends only on the decoded pixels, so it is the same in
every process and machine that decodes the same files with the same decoder. Images resized to a labels file's
size (``clip.meta["labels"]``) are not the frames the model saw; for them only the frame ids are compared per
sample, and :func:`check_store_data` compares the reader's own frames (``load_images``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["FINGERPRINT_KEY", "SAMPLES", "DataCheck", "DataMismatchError", "Fingerprint", "check_store_data",
           "fingerprint_images", "frame_hashes"]

log = logging.getLogger("vidprobe.data")

#: the feature-file metadata key holding a video's fingerprint (a JSON string)
FINGERPRINT_KEY = "data_fingerprint"
FORMAT = 1
#: at most this many samples per side of a frame go into its hash
SAMPLES = 64
_HASH_HEX = 16  # blake2b digest_size 8
OVERRIDE = "--allow-data-mismatch"
_warned_unchecked: set[str] = set()  # stores already warned about (once per process)


class DataMismatchError(ValueError):
    """Features were extracted from other data than the dataset now holds (the message names video and field)."""


def frame_hashes(images: torch.Tensor) -> list[str]:
    """One hex hash per frame of ``images [T,3,H,W]`` in [0,1]: blake2b of the size and a strided uint8 subsample."""
    T, _, H, W = images.shape
    sy, sx = max(1, H // SAMPLES), max(1, W // SAMPLES)
    sub = images[:, :, sy // 2 :: sy, sx // 2 :: sx].detach().to("cpu", torch.float32)
    q = sub.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).contiguous().numpy()
    size = f"{H}x{W}:".encode()
    return [hashlib.blake2b(size + q[t].tobytes(), digest_size=_HASH_HEX // 2).hexdigest() for t in range(T)]


def _ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (frame ids are mostly runs)."""
    out: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def _unranges(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, sep, b = part.partition("-")
        if sep and a:  # "-3" alone is a negative id
            out += range(int(a), int(b) + 1)
        else:
            out.append(int(part))
    return tuple(out)


def _few(xs: Sequence[int], n: int = 6) -> str:
    """``0, 1, 2, ...`` (at most ``n`` items and the count left out)."""
    head = ", ".join(str(x) for x in xs[:n])
    return head + (f", ... ({len(xs) - n} more)" if len(xs) > n else "")


def _hw(hw: Sequence[int]) -> str:
    return f"{hw[0]}x{hw[1]}"


@dataclass(frozen=True)
class Fingerprint:
    """The frames one video's features came from: ``count`` frames in the video, and per extracted frame
    (positions ``0..K-1``) its source id, the common size ``hw`` and a content hash."""

    count: int
    frame_ids: tuple[int, ...]
    hw: tuple[int, int]
    hashes: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "count": self.count, "hw": list(self.hw),
                           "frame_ids": _ranges(self.frame_ids), "hashes": "".join(self.hashes)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> Fingerprint:
        try:
            d = json.loads(text)
            h = d["hashes"]
            fp = cls(int(d["count"]), _unranges(d["frame_ids"]), (int(d["hw"][0]), int(d["hw"][1])),
                     tuple(h[i : i + _HASH_HEX] for i in range(0, len(h), _HASH_HEX)))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ValueError(f"{where}: metadata field {FINGERPRINT_KEY!r} is malformed ({e})") from None
        if len(fp.frame_ids) != len(fp.hashes):
            raise ValueError(f"{where}: metadata field {FINGERPRINT_KEY!r}: {len(fp.frame_ids)} frame ids but "
                             f"{len(fp.hashes)} hashes")
        return fp

    def differences(self, count: int | None = None, positions: Sequence[int] = (),
                    frame_ids: Sequence[int] | None = None, hw: Sequence[int] | None = None,
                    hashes: Sequence[str] | None = None) -> list[str]:
        """What differs (store vs dataset) from what the dataset shows: its frame count, and the ids, size and
        hashes of the frames at ``positions``; positions past the extracted frames are not compared."""
        out = []
        if count is not None and count != self.count:
            out.append(f"frame count {self.count} vs {count}")
        keep = [i for i, p in enumerate(positions) if 0 <= p < len(self.hashes)]
        pos = [positions[i] for i in keep]
        if frame_ids is not None:
            bad = [(p, self.frame_ids[p], int(frame_ids[i])) for i, p in zip(keep, pos)
                   if self.frame_ids[p] != int(frame_ids[i])]
            if bad:
                out.append(f"frame ids {_few([b[1] for b in bad])} vs {_few([b[2] for b in bad])} "
                           f"(at positions {_few([b[0] for b in bad])})")
        if hw is not None and tuple(hw) != self.hw:
            out.append(f"frame size {_hw(self.hw)} vs {_hw(hw)}")
        elif hashes is not None:
            bad_pos = [p for i, p in zip(keep, pos) if hashes[i] != self.hashes[p]]
            if bad_pos:
                out.append(f"content of frame(s) at positions {_few(bad_pos)} differs")
        return out


def fingerprint_images(images: torch.Tensor, frame_ids: Sequence[int], count: int) -> Fingerprint:
    """The fingerprint of the frames ``images [K,3,H,W]`` (source ids ``frame_ids``) of a ``count``-frame video."""
    return Fingerprint(int(count), tuple(int(i) for i in frame_ids), (int(images.shape[-2]), int(images.shape[-1])),
                       tuple(frame_hashes(images)))


def read_fingerprint(metadata: Mapping[str, str], where: str) -> Fingerprint | None:
    """The fingerprint in a feature file's metadata; None for files written before fingerprints existed."""
    text = metadata.get(FINGERPRINT_KEY)
    return None if text is None else Fingerprint.from_json(text, where)


def _message(where: str, dataset_root: Any, problems: Mapping[str, list[str]], total: int, show: int = 5) -> str:
    lines = [f"{where}: the features were extracted from other data than {dataset_root} holds (store vs dataset):"]
    lines += [f"  video {vid!r}: {'; '.join(d)}" for vid, d in list(problems.items())[:show]]
    if len(problems) > show:
        lines.append(f"  ... {len(problems) - show} more")
    lines.append(f"{len(problems)} of {total} video(s) differ. Extract features from this dataset (another --out), "
                 f"or pass {OVERRIDE} to use them anyway.")
    return "\n".join(lines)


class DataCheck:
    """The fingerprints of the videos of one store key, checked against the frames each sample reads."""

    def __init__(self, where: str, dataset_root: Any, fingerprints: dict[str, Fingerprint], allow: bool = False):
        self.where, self.dataset_root, self.fingerprints, self.allow = where, str(dataset_root), fingerprints, allow

    def sample(self, video: str, positions: Sequence[int], clip) -> None:
        """Refuse a sample whose frames (ids; size and content unless resized to labels) are not those extracted."""
        fp = self.fingerprints.get(video)
        if fp is None or self.allow:
            return
        positions = [int(p) for p in positions]
        own = "labels" not in clip.meta  # images resized to a labels file are not the frames the model saw
        diff = fp.differences(positions=positions, frame_ids=clip.frame_ids.tolist(),
                              hw=tuple(clip.images.shape[-2:]) if own else None,
                              hashes=frame_hashes(clip.images) if own else None)
        if diff:
            raise DataMismatchError(_message(self.where, self.dataset_root, {video: diff}, 1))


def _check_video(dataset, vid: str, fp: Fingerprint) -> list[str]:
    """Frame count, and size and content of the first and last extracted frame, of one video."""
    try:
        n = int(dataset.num_frames(vid))
        diff = fp.differences(count=n)
        pos = [p for p in sorted({0, len(fp.hashes) - 1}) if p < n]
        if pos:
            imgs = dataset.load_images(vid, pos)
            diff += fp.differences(positions=pos, hw=tuple(imgs.shape[-2:]), hashes=frame_hashes(imgs))
    except Exception as e:  # noqa: BLE001 - a broken video fails (and is reported) where it is read, not here
        log.debug("%s: not checked against its fingerprint (%s: %s)", vid, type(e).__name__, e)
        return []
    return diff


def check_store_data(dataset, videos: Sequence[str], metadata_of: Callable[[str], Mapping[str, str]], where: str,
                     allow: bool = False) -> DataCheck:
    """Check every video's fingerprint (``metadata_of(video)``: its feature file's metadata) against ``dataset``.

    Raises :class:`DataMismatchError` naming each differing video and field unless ``allow`` (then it warns).
    Videos without a fingerprint (stores written before fingerprints) are warned about once per process and store.
    Returns the :class:`DataCheck` for the per-sample checks.
    """
    fps: dict[str, Fingerprint] = {}
    unchecked: list[str] = []
    problems: dict[str, list[str]] = {}
    for vid in videos:
        fp = read_fingerprint(metadata_of(vid), f"{where} (video {vid!r})")
        if fp is None:
            unchecked.append(vid)
            continue
        fps[vid] = fp
        diff = _check_video(dataset, vid, fp)
        if diff:
            problems[vid] = diff
    if problems:
        msg = _message(where, dataset.root, problems, len(videos))
        if not allow:
            raise DataMismatchError(msg)
        log.warning("%s\n(used anyway: %s)", msg, OVERRIDE)
    if unchecked and where not in _warned_unchecked:
        _warned_unchecked.add(where)
        log.warning("%s: %d of %d video(s) have no data fingerprint (extracted before vidprobe recorded them): "
                    "cannot check that they come from %s; re-extract to have them checked",
                    where, len(unchecked), len(videos), dataset.root)
    return DataCheck(where, dataset.root, fps, allow)
