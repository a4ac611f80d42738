"""Which frames of a video form one training / evaluation sample.

The reference rule: frame 0 plus 3 more frames, pairwise at least 5 frames
apart, all within the first 76 frames, each snapped to ``1 + 4k`` so that it
is the first frame of its latent group in a 4x temporal VAE (frame 0 is a
latent group of its own). Validation draws with a fixed seed per scene.

Two methods (``method``):

* ``"uniform"`` (vidprobe): *uniform* among all frame sets that satisfy the
  constraints AFTER snapping (exact counting by dynamic programming, no
  rejection loop), so a draw never fails when a valid set exists and always
  fails, with a clear error, when none does.
* ``"gaps_then_floor"`` (the study's release, ``VideoProbeDataset.
  _sample_query_frames`` then its ``query_idx_divisor`` flooring): raw frames
  ``0 = f_0 < f_1 < ...`` with ``f_{i+1} = f_i + min_gap + e_i``, where the
  slack ``L - 1 - (n-1) min_gap`` (``L`` the frame limit) is split by ``n-1``
  cut points drawn uniformly with replacement and sorted (``e_i`` the
  differences; the last part is dropped); each frame is then floored to
  ``1 + snap * floor((f - 1) / snap)`` (frame 0 stays 0). Snapped gaps of
  ``min_gap - 1`` (4 for the reference) therefore occur, in about 10% of the
  reference draws (``tests/test_reference_mode.py`` checks the distribution
  against the rule by enumeration).

Evaluation frames (:meth:`FrameSampler.eval_frames`) are fixed per scene in
both methods (a seeded draw of the sampler's method). The release's
validation draws are not fixed: its seed 0 is tested as false, so each
validation pass redraws them.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import zlib
from dataclasses import dataclass

__all__ = ["METHODS", "FrameSampler", "SamplingError", "stable_seed"]

METHODS = ("uniform", "gaps_then_floor")


class SamplingError(ValueError):
    """The video is too short (or the sampler misconfigured) to satisfy the constraints."""


def stable_seed(*parts: object, scheme: str = "sha256") -> int:
    """A seed from ``parts`` that is the same in every process (unlike ``hash()``); vidprobe's one seed function.

    ``scheme="sha256"``: 64 bits of SHA-256 over the parts joined by U+001F (evaluation frames, consistency
    pairs). ``scheme="crc32"``: 31 bits of CRC-32 over the parts joined by ``"|"``: the training-frame draws
    (:class:`vidprobe.probe.data.ProbeDataset`) use it, so the frames of every (seed, epoch, video), and with
    them resumed runs and the demo's numbers, stay what they were.
    """
    if scheme == "crc32":
        return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF
    if scheme != "sha256":
        raise ValueError(f"stable_seed: scheme must be 'sha256' or 'crc32', got {scheme!r}")
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


@dataclass(frozen=True)
class FrameSampler:
    """Draw ``num_frames`` sorted frame indices of a video.

    * ``include_first``: frame 0 is always the first frame (the reference frame).
    * all frames lie in ``[0, min(max_frame, video_len))`` (``max_frame=None``: no limit);
    * every pair is at least ``min_gap`` frames apart;
    * every frame is ``0`` or ``1 + snap*k`` (``snap=1``: any frame);
    * ``method``: ``"uniform"`` or ``"gaps_then_floor"`` (module docstring;
      the latter needs ``include_first``).
    """

    num_frames: int = 4
    min_gap: int = 5
    max_frame: int | None = 76
    snap: int = 4
    include_first: bool = True
    method: str = "uniform"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise SamplingError(f"FrameSampler: num_frames must be >= 1, got {self.num_frames}")
        if self.min_gap < 1:
            raise SamplingError(f"FrameSampler: min_gap must be >= 1, got {self.min_gap}")
        if self.snap < 1:
            raise SamplingError(f"FrameSampler: snap must be >= 1, got {self.snap}")
        if self.max_frame is not None and self.max_frame < 1:
            raise SamplingError(f"FrameSampler: max_frame must be >= 1, got {self.max_frame}")
        if self.method not in METHODS:
            raise SamplingError(f"FrameSampler: method must be one of {METHODS}, got {self.method!r}")
        if self.method == "gaps_then_floor" and not self.include_first:
            raise SamplingError("FrameSampler: method 'gaps_then_floor' always starts at frame 0 (include_first)")

    def limit(self, video_len: int) -> int:
        """Frames are drawn from ``[0, limit)``."""
        return video_len if self.max_frame is None else min(self.max_frame, video_len)

    def candidates(self, video_len: int) -> list[int]:
        """Every frame that may be chosen (frame 0 and the ``1 + snap*k`` grid below the limit)."""
        lim = self.limit(video_len)
        return [f for f in range(lim) if f == 0 or (f - 1) % self.snap == 0]

    def min_video_len(self) -> int:
        """The shortest video this sampler can draw from (the earliest valid choice, plus one)."""
        if self.method == "gaps_then_floor":
            return (self.num_frames - 1) * self.min_gap + 1
        chosen = [0]
        while len(chosen) < self.num_frames:
            f = chosen[-1] + self.min_gap
            while (f - 1) % self.snap != 0:
                f += 1
            chosen.append(f)
        return chosen[-1] + 1

    def _too_short(self, video_len: int) -> SamplingError:
        need = self.min_video_len()
        lim = self.limit(video_len)
        why = f"a video of {video_len} frames" if video_len < need else f"max_frame={self.max_frame}"
        return SamplingError(
            f"cannot draw frames from {why}: {self!r} needs {self.num_frames} frames"
            f"{' (frame 0 included)' if self.include_first else ''} pairwise >= {self.min_gap} apart"
            f"{f', snapped to 1+{self.snap}k' if self.snap > 1 else ''}, within [0, {lim}); "
            f"that takes at least {need} frames (video length and max_frame both >= {need})"
        )

    def sample(self, video_len: int, rng: random.Random | int) -> list[int]:
        """A uniformly random valid frame set, sorted. ``rng`` is a ``random.Random`` or a seed."""
        if video_len < 1:
            raise SamplingError(f"video_len must be >= 1, got {video_len}")
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        if self.method == "gaps_then_floor":
            return self._gaps_then_floor(video_len, rng)
        cands = self.candidates(video_len)
        if self.include_first:
            fixed = [0]
            pool = [c for c in cands if c >= self.min_gap]
            m = self.num_frames - 1
        else:
            fixed = []
            pool = cands
            m = self.num_frames
        if m == 0:
            return fixed
        n = len(pool)
        # nxt[i]: first pool index whose frame is >= pool[i] + min_gap
        nxt = [bisect.bisect_left(pool, pool[i] + self.min_gap) for i in range(n)]
        # suffix[j][i] = number of valid chains of length j whose first element has index >= i
        suffix = [[0] * (n + 1) for _ in range(m + 1)]
        for i in range(n - 1, -1, -1):
            suffix[1][i] = suffix[1][i + 1] + 1
        for j in range(2, m + 1):
            for i in range(n - 1, -1, -1):
                suffix[j][i] = suffix[j][i + 1] + suffix[j - 1][nxt[i]]
        if n == 0 or suffix[m][0] == 0:
            raise self._too_short(video_len)
        out = list(fixed)
        start = 0
        for j in range(m, 0, -1):
            # choose index i >= start with weight chains(i, j) = suffix[j-1][nxt[i]] (1 when j == 1)
            r = rng.randrange(suffix[j][start])
            i = start
            while True:
                w = 1 if j == 1 else suffix[j - 1][nxt[i]]
                if r < w:
                    break
                r -= w
                i += 1
            out.append(pool[i])
            start = nxt[i]
        return out

    def _gaps_then_floor(self, video_len: int, rng: random.Random) -> list[int]:
        n, gap, lim = self.num_frames, self.min_gap, self.limit(video_len)
        slack = lim - 1 - (n - 1) * gap
        if slack < 0:
            raise self._too_short(video_len)
        cuts = sorted(rng.randint(0, slack) for _ in range(n - 1))
        extras = [b - a for a, b in zip([0] + cuts, cuts)]  # the first n-1 parts of the slack
        raw = [0]
        for e in extras:
            raw.append(raw[-1] + gap + e)
        return [0 if f == 0 else 1 + self.snap * ((f - 1) // self.snap) for f in raw]

    def eval_frames(self, video_id: str, video_len: int, seed: int = 0) -> list[int]:
        """The fixed validation draw of a scene: deterministic in ``(video_id, seed)`` across processes."""
        return self.sample(video_len, random.Random(stable_seed("vidprobe.eval_frames", seed, video_id)))
