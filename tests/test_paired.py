"""Paired bootstrap of a metric difference and Holm's adjustment (vidprobe.metrics.stats).

Expected values are computed here independently: a loop-by-loop bootstrap with the documented draw rule,
the normal-theory paired interval, and Holm adjustments worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidprobe.metrics.stats import holm, paired_bootstrap


def _reference(a, b, n_resamples, seed, chunk=1000, conf=0.95):
    """The documented rule, written out resample by resample."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = []
    for s in range(0, n_resamples, chunk):
        idx = rng.integers(0, d.size, size=(min(chunk, n_resamples - s), d.size))
        means += [float(np.mean([d[i] for i in row])) for row in idx]
    means = np.sort(np.array(means))
    below, above = sum(m <= 0 for m in means), sum(m >= 0 for m in means)
    q = lambda x: float(np.interp(x * (len(means) - 1), np.arange(len(means)), means))  # noqa: E731
    return q((1 - conf) / 2), q((1 + conf) / 2), min(1.0, 2 * (1 + min(below, above)) / (1 + n_resamples))


def test_clear_difference_is_resolved():
    rng = np.random.default_rng(1)
    b = rng.normal(1.0, 0.3, size=60)
    a = b + 0.2 + rng.normal(0, 0.05, size=60)  # a is worse by 0.2 on every clip, with small noise
    r = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    d = a - b
    assert r.diff == pytest.approx(d.mean(), abs=1e-12)
    assert r.n == 60 and r.dropped == 0
    assert r.low > 0 and r.p == pytest.approx(2 / 2001)  # no resample reaches 0: the floor 2 / (1 + B)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)  # normal-theory paired interval
    assert r.low == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert r.high == pytest.approx(d.mean() + half, abs=0.25 * half)


def test_matches_the_rule_written_out():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 25), rng.normal(0.3, 1, 25)
    r = paired_bootstrap(a, b, n_resamples=1500, seed=11, chunk=1000)
    lo, hi, p = _reference(a, b, 1500, 11)
    assert (r.low, r.high, r.p) == pytest.approx((lo, hi, p), abs=1e-12)


def test_identical_runs_give_p_one_and_zero_width():
    vals = {f"clip{i}": v for i, v in enumerate(np.random.default_rng(0).uniform(0, 1, 30))}
    r = paired_bootstrap(vals, dict(vals), n_resamples=500)
    assert r.diff == 0 and r.low == 0 and r.high == 0 and r.p == 1.0


def test_matches_clips_by_id_not_order():
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    b = {"z": 3.0, "x": 1.0, "y": 2.0}  # same values, other order
    r = paired_bootstrap(a, b, n_resamples=200)
    assert r.diff == 0 and r.p == 1.0 and r.n == 3


def test_refuses_mismatched_clips():
    with pytest.raises(ValueError, match=r"different clips \(2 shared, 1 only in a .*'c'.*1 only in b .*'d'"):
        paired_bootstrap({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 3})
    with pytest.raises(ValueError, match="same clips"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0])


def test_missing_values_are_dropped_and_counted():
    r = paired_bootstrap({"a": 1.0, "b": None, "c": 2.0, "d": 4.0}, {"a": 0.0, "b": 1.0, "c": float("inf"), "d": 3.0},
                         n_resamples=100)
    assert r.n == 2 and r.dropped == 2 and r.diff == 1.0


def test_seeded_determinism():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 40), rng.normal(0, 1, 40)
    assert paired_bootstrap(a, b, seed=4, n_resamples=800) == paired_bootstrap(a, b, seed=4, n_resamples=800)
    assert paired_bootstrap(a, b, seed=4, n_resamples=800) != paired_bootstrap(a, b, seed=5, n_resamples=800)


def test_holm_hand_computed():
    # sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (max with 0.06), 0.06 (max of 0.04*1, 0.06)
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # 0.001*3 = 0.003, 0.5*2 = 1.0 -> capped 1, 0.6*1 = 0.6 -> monotone max 1.0
    assert holm([0.6, 0.001, 0.5]) == pytest.approx([1.0, 0.003, 1.0])
    # NaN is no test: the family is the two others (m = 2)
    out = holm([0.02, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.2]) == [0.2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


# -- the report's sections (vidprobe.report.paired, vidprobe.report.published_check) ------------------------

from vidprobe.report.html import benchmark_table, load_runs, write_report  # noqa: E402
from vidprobe.report.paired import compare, paired_section  # noqa: E402
from vidprobe.report.published_check import verdict, verdicts  # noqa: E402
from vidprobe.results import ResultsDB  # noqa: E402

PRE = {"kind": "pretrained", "label": "pretrained Wan-AI/Wan2.1-T2V-14B@abc", "model_id": "Wan-AI/Wan2.1-T2V-14B",
       "revision": "abc", "source": "store manifest"}


def _add(db, name, layer, point_errs, backbone="wan2.1-t2v-14b", dataset="/data/co3d_ref", ci=None, clip_prefix="c"):
    rid = db.add_run("probe", name=name, backbone=backbone, dataset=dataset, layer=layer, timestep=749,
                     probe="reference", seed=1, config={"weights": PRE, "eval": {"run_dir": f"/runs/{name}"}},
                     checkpoint_kind="last")
    m = float(np.mean(point_errs))
    db.add_metrics(rid, {"point_err": m}, ci={"point_err": ci or (m * 0.9, m * 1.1)})
    db.add_clip_metrics(rid, [(f"{clip_prefix}{i}", {"point_err": v}) for i, v in enumerate(point_errs)])
    db.finish_run(rid)


def test_report_resolves_a_clear_difference_and_calls_a_tie_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.02, 0.04, 40)
    with ResultsDB(tmp_path / "r.db") as db:
        _add(db, "l11", 11, base + 0.01)  # worse on every clip
        _add(db, "l21", 21, base)  # the best
        noise = rng.normal(0, 0.002, 40)
        _add(db, "l31", 31, base + noise - noise.mean() + 1e-5)  # noise around the best (mean difference 1e-5)
        _add(db, "other", 5, base, dataset="/data/co3d_other", clip_prefix="o")  # other clips: not paired with those
    datasets, rows = benchmark_table(load_runs(tmp_path / "r.db"))
    H, M = paired_section(datasets, rows, n_resamples=1000)
    md = "\n".join(M)
    l11 = next(x for x in M if x.startswith("| wan2.1-t2v-14b (L11"))
    l21 = next(x for x in M if x.startswith("| wan2.1-t2v-14b (L21"))
    l31 = next(x for x in M if x.startswith("| wan2.1-t2v-14b (L31"))
    assert "resolved" in l11 and "+0.100 [" in l11  # 0.01 raw, x10
    assert "| best |" in l21
    assert "within noise" in l31
    assert "40 matched clips" in md
    # Holm across the two comparisons: the noise row's adjusted p is min(1, 2 * its raw p) or the running max
    raw = paired_bootstrap({f"c{i}": v for i, v in enumerate(base + 0.01)}, {f"c{i}": v for i, v in enumerate(base)},
                           n_resamples=1000)
    assert f"p={min(1, 2 * raw.p):.3g} resolved" in l11
    assert "shares its clips with no other row" in md and "wan2.1-t2v-14b (L5" in md


def test_report_skips_with_a_reason_when_no_two_rows_share_clips(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        _add(db, "only", 11, [0.03, 0.04, 0.05])
    datasets, rows = benchmark_table(load_runs(tmp_path / "r.db"))
    _, M = paired_section(datasets, rows)
    assert any("Skipped: fewer than 2 rows share clips" in x for x in M)


def test_compare_picks_the_best_by_direction():
    clips = {"a": 0.5, "b": 0.6}
    lower = {"a": 0.1, "b": 0.2}
    best, res = compare([("x", clips, 0.55), ("y", lower, 0.15)], "auc_30", n_resamples=100)  # AUC: higher is better
    assert best == "x" and res["y"]["diff"] == pytest.approx(-0.4)
    best, _ = compare([("x", clips, 0.55), ("y", lower, 0.15)], "depth_err", n_resamples=100)  # error: lower
    assert best == "y"


def test_published_verdicts():
    assert verdict(0.284, 0.027, 0.030, table_scale=10) == "within"  # 0.0284 raw
    assert verdict(0.284, 0.030, 0.035, table_scale=10) == "outside"
    assert verdict(0.151, None, 0.2) == "no interval"
    row = {"published": {"CO3Dv2": (0.284, 0.151, 0.200, 0.736)},
           "intervals": {"CO3Dv2": {"point_err": (0.02, 0.03), "depth_err": (0.16, 0.2), "auc_5": (0.1, 0.3),
                                    "auc_30": (None, None)}},
           "estimates": {"CO3Dv2": {"point_err": 0.025, "depth_err": 0.18, "auc_5": 0.2, "auc_30": 0.7}}}
    assert verdicts(row, "CO3Dv2") == {"point_err": "within", "depth_err": "outside", "auc_5": "within",
                                       "auc_30": "no interval"}


def test_report_shows_published_verdicts(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        _add(db, "in", 11, [0.028] * 12, ci=(0.027, 0.029))  # WAN CO3D published 0.284 x10: inside
        _add(db, "out", 21, [0.05] * 12, ci=(0.045, 0.055))  # outside
    paths = write_report(tmp_path / "r.db", tmp_path / "rep")
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "published 0.284 / ours 0.280 [0.270, 0.290]: within" in md
    assert "published 0.284 / ours 0.500 [0.450, 0.550]: outside" in md
    assert "1 of 2 published numbers lie inside" in md
    assert "0.284 (within)" in page and "0.284 (outside)" in page
    assert "## Paired comparisons" in md and "<h2>Paired comparisons</h2>" in page
