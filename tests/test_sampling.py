"""FrameSampler: constraints over many draws, exact coverage, determinism, too-short errors."""

import itertools
import random
import subprocess
import sys

import pytest

from vidprobe.data.sampling import FrameSampler, SamplingError, stable_seed


def _valid_sets(s: FrameSampler, video_len: int) -> set[tuple[int, ...]]:
    """Brute force: every frame set satisfying the constraints."""
    lim = len(range(video_len)) if s.max_frame is None else min(s.max_frame, video_len)
    grid = [f for f in range(lim) if f == 0 or (f - 1) % s.snap == 0]
    out = set()
    for combo in itertools.combinations(grid, s.num_frames):
        if s.include_first and combo[0] != 0:
            continue
        if all(b - a >= s.min_gap for a, b in zip(combo, combo[1:])):
            out.add(combo)
    return out


def _check(s: FrameSampler, frames: list[int], video_len: int) -> None:
    lim = video_len if s.max_frame is None else min(s.max_frame, video_len)
    assert len(frames) == s.num_frames
    assert frames == sorted(frames)
    assert all(0 <= f < lim for f in frames)
    assert all(b - a >= s.min_gap for a, b in zip(frames, frames[1:]))
    assert all(f == 0 or (f - 1) % s.snap == 0 for f in frames)
    if s.include_first:
        assert frames[0] == 0


def test_reference_rule_over_many_draws():
    s = FrameSampler()  # 4 frames, gap 5, first 76, snapped to 1+4k, frame 0 included
    rng = random.Random(0)
    seen = set()
    for _ in range(6000):
        f = s.sample(81, rng)
        _check(s, f, 81)
        assert all(x in {0} | {1 + 4 * k for k in range(19)} for x in f)
        seen.add(tuple(f))
    valid = _valid_sets(s, 81)
    assert len(valid) == 560  # C(16,3): 3 of the 18 frames 5..73 with index gaps >= 2
    assert seen == valid  # every valid set is reachable, nothing else is drawn
    assert max(max(f) for f in seen) == 73  # 77 would be 1+4k but lies outside the first 76


@pytest.mark.parametrize(
    "sampler,video_len",
    [
        (FrameSampler(num_frames=3, min_gap=2, max_frame=None, snap=1), 9),
        (FrameSampler(num_frames=3, min_gap=3, max_frame=12, snap=2, include_first=False), 20),
        (FrameSampler(num_frames=2, min_gap=1, max_frame=None, snap=1, include_first=False), 5),
        (FrameSampler(num_frames=4, min_gap=5, max_frame=76, snap=4), 30),
        (FrameSampler(num_frames=1), 3),
    ],
)
def test_exact_support_and_uniformity_on_small_cases(sampler, video_len):
    valid = _valid_sets(sampler, video_len)
    rng = random.Random(1)
    counts: dict[tuple[int, ...], int] = {}
    n = 200 * len(valid)
    for _ in range(n):
        f = tuple(sampler.sample(video_len, rng))
        _check(sampler, list(f), video_len)
        counts[f] = counts.get(f, 0) + 1
    assert set(counts) == valid
    # uniform over valid sets: every count within 5 sigma of n / |valid|
    mean = n / len(valid)
    assert all(abs(c - mean) < 5 * mean**0.5 + 1 for c in counts.values()), counts


def test_snap_one_disables_snapping():
    s = FrameSampler(snap=1)
    frames = set()
    for seed in range(300):
        frames.update(s.sample(81, seed))
    assert any(f % 4 != 1 for f in frames if f)  # off-grid frames appear
    assert max(frames) <= 75


def test_determinism():
    s = FrameSampler()
    assert s.sample(81, 7) == s.sample(81, random.Random(7))
    assert len({tuple(s.sample(81, i)) for i in range(20)}) > 10
    assert s.eval_frames("apple/110_13051_23361", 81) == s.eval_frames("apple/110_13051_23361", 81)
    assert len({tuple(s.eval_frames("a", 81, seed=i)) for i in range(5)}) > 1  # the seed matters
    per_scene = {tuple(s.eval_frames(f"scene{i}", 81)) for i in range(30)}
    assert len(per_scene) > 10  # differs between scenes
    assert stable_seed("x", 1) == stable_seed("x", 1) != stable_seed("x", 2)


def test_eval_frames_stable_across_processes():
    import vidprobe.data.sampling as mod

    # load the module file alone (it needs no torch) so each process starts fast
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('smp', sys.argv[1]); "
            "m = u.module_from_spec(s); sys.modules['smp'] = m; s.loader.exec_module(m); "
            "print(m.FrameSampler().eval_frames('teddybear/34_1479_4753', 81, seed=3))")
    outs = {
        subprocess.run([sys.executable, "-c", code, mod.__file__], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": str(h), "PATH": ""}).stdout
        for h in (1, 2)
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str(FrameSampler().eval_frames("teddybear/34_1479_4753", 81, seed=3))


def test_too_short_videos_raise_clearly():
    s = FrameSampler()
    assert s.min_video_len() == 22  # 0, 5, 13, 21
    assert s.sample(22, 0) == [0, 5, 13, 21]  # the only valid set
    with pytest.raises(SamplingError, match=r"21 frames.*at least 22"):
        s.sample(21, 0)
    with pytest.raises(SamplingError, match="max_frame=20"):
        FrameSampler(max_frame=20).sample(81, 0)
    for L in range(1, 30):
        for smp in (FrameSampler(), FrameSampler(num_frames=3, min_gap=2, snap=1), FrameSampler(include_first=False)):
            if _valid_sets(smp, L):
                _check(smp, smp.sample(L, 0), L)
                assert L >= smp.min_video_len()
            else:
                with pytest.raises(SamplingError):
                    smp.sample(L, 0)
    with pytest.raises(SamplingError, match="num_frames"):
        FrameSampler(num_frames=0)
    with pytest.raises(SamplingError, match="snap"):
        FrameSampler(snap=0)
    with pytest.raises(SamplingError, match="method"):
        FrameSampler(method="random")
    with pytest.raises(SamplingError, match="include_first"):
        FrameSampler(method="gaps_then_floor", include_first=False)
    # the release's rule needs (n-1) * min_gap + 1 raw frames: 16 for the reference, so 15 are too few
    s = FrameSampler(method="gaps_then_floor")
    assert s.min_video_len() == 16 and s.sample(16, 0) == [0, 5, 9, 13]  # raw 0, 5, 10, 15 floored to 1+4k
    with pytest.raises(SamplingError, match="at least 16"):
        s.sample(15, 0)
