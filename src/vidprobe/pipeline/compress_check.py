"""`vidprobe compress-check ORIG COMPRESSED`: what a feature codec costs the probe, measured (issue 14).

The same probe is trained (:func:`vidprobe.probe.train.train`) and scored
(:func:`vidprobe.pipeline.evaluate.evaluate_run`) on the uncompressed and the compressed store of the same clips,
once per seed with the same seeds, so the two runs of a seed see the same batches and start from the same weights;
only the features differ. Reported:

* bytes on disk of each store (every file under its root: features, PCA bases, manifest) and their ratio;
* per metric, the change ``compressed - uncompressed`` of the mean over clips, with a paired bootstrap 95%
  interval over clips (:func:`vidprobe.metrics.stats.paired_bootstrap`; each clip's value is its mean over the
  seeds, as the report's paired comparisons do, :mod:`vidprobe.report.paired`);
* the **seed noise** of the metric: the spread (max - min) across seeds of the uncompressed run's value (mean over
  clips), i.e. how much the metric moves when only the training seed changes;
* a verdict: **outside noise** when the paired interval excludes 0 *and*, on every seed, the change of that
  seed's runs has the same sign and a size above the seed noise; **within noise** otherwise (with one seed there
  is no seed noise and no verdict). Asking every seed matters: two runs of one seed on features that differ by a
  rounding error already follow different training trajectories (in ``benchmarks/bench_codecs.py`` int8 moved
  Point Err by several times the 3-seed spread on one seed and by a fraction of it on another), so a mean change
  larger than the spread of a few seeds is not yet a codec's effect.

Runs go to ``work/<store name>-<hash of its path>/seed<s>/`` and are reused by a rerun (training resumes;
a finished run is only evaluated again), so several compressed stores checked against one original share its runs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vidprobe.metrics.registry import EVAL_TABLE_METRICS, METRICS
from vidprobe.metrics.stats import paired_bootstrap

__all__ = ["DEFAULT_TRAIN", "NOISE_DEFINITION", "VERDICT_DEFINITION", "CompressCheckError", "check_stores",
           "compare_runs", "format_check"]

#: the training config of each run unless the caller gives one: the tiny probe, a short schedule (CPU minutes)
DEFAULT_TRAIN: dict[str, Any] = {
    "probe": {"preset": "tiny"}, "epochs": 1000, "max_steps": 60, "batch_size": 4, "out_hw": [32, 56],
    "optim": {"lr": 3.0e-3, "warmup_frac": 0.1}, "checkpoint_epochs": 0,
}
NOISE_DEFINITION = ("seed noise = max - min over the seeds of the uncompressed run's metric (mean over clips): how "
                    "far the metric moves when only the training seed changes")
VERDICT_DEFINITION = ("outside noise = the paired 95% interval of the change excludes 0 and every seed's change "
                      "(compressed - uncompressed run of that seed) has the same sign and |change| > seed noise; "
                      "within noise otherwise")


class CompressCheckError(ValueError):
    """Stores or options that cannot be compared (the message names the store or option)."""


@dataclass
class StoreRuns:
    """One store's runs: per seed, ``{metric: {clip: value}}``."""

    store: Path
    codec: str
    bytes: int
    videos: int
    per_seed: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    run_dirs: dict[int, str] = field(default_factory=dict)


def _tag(store: Path) -> str:
    digest = hashlib.sha1(str(store.resolve()).encode()).hexdigest()[:8]
    return f"{store.name}-{digest}"


def _open_stores(orig: Path, comp: Path):
    from vidprobe.features.compress import store_bytes
    from vidprobe.features.store import FeatureStore

    a, b = FeatureStore(orig), FeatureStore(comp)
    if a.settings != b.settings:
        diff = [k for k in sorted(set(a.settings) | set(b.settings)) if a.settings.get(k) != b.settings.get(k)]
        raise CompressCheckError(f"{comp} was not written from {orig}'s features: settings differ ({', '.join(diff)})")
    if a.keys() != b.keys():
        raise CompressCheckError(f"{orig} has keys {a.keys()} but {comp} has {b.keys()}")
    out = []
    for st, root in ((a, orig), (b, comp)):
        vids = {v for k in st.keys() for v in st.videos(*k)}
        out.append(StoreRuns(root, st.codec.name if st.codec else "none", store_bytes(root), len(vids)))
    return out


def _train_and_score(runs: StoreRuns, dataset: str, work: Path, seeds: list[int], train_cfg: dict,
                     overrides: list[str], progress: bool, echo: Callable[[str], None]) -> None:
    from vidprobe.pipeline.evaluate import evaluate_run
    from vidprobe.probe.train import find_checkpoint, load_config, train

    for seed in seeds:
        run_dir = work / _tag(runs.store) / f"seed{seed}"
        base = dict(train_cfg, features=str(runs.store), dataset=str(dataset), out=str(run_dir), seed=seed,
                    name=f"{runs.store.name}-seed{seed}")
        cfg = load_config(None, overrides, base=base)
        res = train(cfg, resume=find_checkpoint(run_dir, "last") is not None, progress=progress)
        echo(f"[compress-check] {runs.store} seed {seed}: {'already trained' if res.already_finished else 'trained'} "
             f"({res.steps} steps)")
        ev = evaluate_run(run_dir, which="last", save_clips=0, progress=progress, n_resamples=200)
        per: dict[str, dict[str, float]] = {}
        for clip in ev.per_clip:
            for k, v in clip.items():
                if k in METRICS and isinstance(v, (int, float)) and not isinstance(v, bool):
                    per.setdefault(k, {})[str(clip["clip"])] = float(v)
        runs.per_seed[seed] = per
        runs.run_dirs[seed] = str(run_dir)


def _clip_means(runs: StoreRuns, metric: str) -> dict[str, float]:
    seeds = list(runs.per_seed)
    ids = set(runs.per_seed[seeds[0]].get(metric, {}))
    return {c: float(np.mean([runs.per_seed[s][metric][c] for s in seeds])) for c in sorted(ids)}


def _mean(values) -> float:
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def compare_runs(orig: StoreRuns, comp: StoreRuns, metrics: list[str] | None = None, n_resamples: int = 2000,
                 seed: int = 0) -> dict[str, dict]:
    """Per metric: values, change with its paired interval, seed noise and verdict (see the module docs)."""
    seeds = list(orig.per_seed)
    have = set.intersection(*(set(orig.per_seed[s]) & set(comp.per_seed[s]) for s in seeds))
    names = [m for m in (metrics or EVAL_TABLE_METRICS) if m in have]
    out: dict[str, dict] = {}
    for m in names:
        a, b = _clip_means(orig, m), _clip_means(comp, m)
        r = paired_bootstrap(b, a, n_resamples=n_resamples, seed=seed)
        po = [_mean(orig.per_seed[s][m].values()) for s in seeds]
        pc = [_mean(comp.per_seed[s][m].values()) for s in seeds]
        noise = float(max(po) - min(po)) if len(seeds) > 1 and all(map(math.isfinite, po)) else math.nan
        per_seed = [c - o for o, c in zip(po, pc)]
        if math.isnan(noise) or math.isnan(r.low) or not all(map(math.isfinite, per_seed)):
            verdict = "-"
        else:
            resolved = r.low > 0 or r.high < 0
            beyond = all(d > noise for d in per_seed) or all(-d > noise for d in per_seed)
            verdict = "outside noise" if resolved and beyond else "within noise"
        spec = METRICS[m]
        worse = (r.diff > 0) == spec.lower_is_better
        out[m] = {"uncompressed": _mean(a.values()), "compressed": _mean(b.values()), "uncompressed_per_seed": po,
                  "compressed_per_seed": pc, "change_per_seed": per_seed, "change": r.diff, "low": r.low,
                  "high": r.high, "p": r.p, "clips": r.n, "dropped": r.dropped, "seed_noise": noise, "verdict": verdict,
                  "direction": "same" if r.diff == 0 else ("worse" if worse else "better")}
    return out


def _describe(r: StoreRuns) -> dict:
    return {"store": str(r.store), "codec": r.codec, "bytes": r.bytes, "videos": r.videos, "runs": r.run_dirs}


def check_stores(orig: str | Path, comp: str | Path, dataset: str | Path, work: str | Path, seeds: list[int],
                 train: dict | None = None, overrides: list[str] | None = None, metrics: list[str] | None = None,
                 n_resamples: int = 2000, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train and score the probe on both stores with every seed; returns the report (what ``--out`` holds)."""
    if not seeds:
        raise CompressCheckError("--seeds: give at least one seed (two or more for a seed-noise verdict)")
    if len(set(seeds)) != len(seeds):
        raise CompressCheckError(f"--seeds: repeated seeds in {seeds}")
    orig, comp, work = Path(orig), Path(comp), Path(work)
    a, b = _open_stores(orig, comp)
    cfg = dict(DEFAULT_TRAIN if train is None else train)
    for runs in (a, b):
        _train_and_score(runs, str(dataset), work, seeds, cfg, list(overrides or []), progress, echo)
    rows = compare_runs(a, b, metrics, n_resamples)
    verdicts = [r["verdict"] for r in rows.values()]
    return {
        "uncompressed": _describe(a), "compressed": _describe(b),
        "ratio": a.bytes / b.bytes if b.bytes else math.inf,
        "seeds": list(seeds), "train": cfg, "overrides": list(overrides or []),
        "seed_noise_definition": NOISE_DEFINITION, "verdict_definition": VERDICT_DEFINITION,
        "change_definition": "change = compressed - uncompressed (mean over clips of each clip's mean over seeds); "
                             "paired bootstrap 95% interval over clips",
        "metrics": rows,
        "outside_noise": [m for m, r in rows.items() if r["verdict"] == "outside noise"],
        "all_within_noise": bool(verdicts) and all(v == "within noise" for v in verdicts),
    }


def _f(v: float, fmt: str = ".4f") -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_check(doc: dict) -> str:
    """The terminal table: bytes and ratio, then one row per metric."""
    a, b = doc["uncompressed"], doc["compressed"]
    lines = [f"uncompressed {a['store']} ({a['codec']}): {a['bytes']:,} bytes, {a['videos']} videos",
             f"compressed   {b['store']} ({b['codec']}): {b['bytes']:,} bytes, {b['videos']} videos",
             f"ratio {doc['ratio']:.2f}x fewer bytes; seeds {doc['seeds']}", ""]
    rows = [("metric", "uncompressed", "compressed", "change [95% CI]", "seed noise", "verdict")]
    for m, r in doc["metrics"].items():
        rows.append((METRICS[m].key_column(scaled=False), _f(r["uncompressed"]), _f(r["compressed"]),
                     f"{_f(r['change'], '+.4f')} [{_f(r['low'], '+.4f')}, {_f(r['high'], '+.4f')}] {r['direction']}",
                     _f(r["seed_noise"]), r["verdict"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    n_out = len(doc["outside_noise"])
    tail = ("every metric within seed noise" if doc["all_within_noise"] else
            f"{n_out} metric(s) outside seed noise: {', '.join(doc['outside_noise'])}" if n_out else "no verdict")
    return "\n".join(lines + table + ["", doc["change_definition"], doc["seed_noise_definition"],
                                      doc["verdict_definition"], f"=> {tail}"])
