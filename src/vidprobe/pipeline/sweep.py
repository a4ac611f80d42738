"""`vidprobe sweep CONFIG`: a grid of probing experiments, resumable, recorded in one results DB.

Config (YAML; schema :class:`vidprobe.pipeline.sweep_config.SweepConfig`: every key and value is checked at
load, an unknown one is refused naming its dotted path)::

    description: "..."               # free text
    dataset: /data/co3d_ref          # any layout vidprobe reads
    labels: /data/co3d_labels        # optional labels directory (VGGT pseudo-labels)
    out: sweeps/wan                  # features/ and runs/ go here
    db: sweeps/wan/results.db        # default: OUT/results.db
    compat: clean                    # or reference: the release's probe/loss/optimiser/sampler settings and metrics
    extract: {dtype: fp16, num_frames: 81, max_videos: null}   # extract_dataset options
    train: {epochs: 75, batch_size: 10}                        # any TrainConfig field (base of every cell)
    consistency: {max_queries: 500, max_videos: null}          # optional: also score feature consistency
    grid:
      backbones:                     # a registered name, or a mapping:
        - wan2.1-t2v-14b
        - {name: cogvideox-5b-i2v, kwargs: {dtype: bf16}, layers: [11, 21, 31], timesteps: [0.25, 0.75]}
        - {name: wan2.1-t2v-1.3b, per_frame: true}   # the video model fed one frame at a time
      layers: [11, 21, 31]           # default for entries without their own; default: the spec's reference layer
      timesteps: [249, 749]          # scheduler indices (int) or tau (float in (0, 1)); default: the spec's;
                                     # ignored for models without timesteps
      presets: [reference]           # probe presets (vidprobe.probe.config.ProbeConfig.preset)
      seeds: [42]

Each backbone entry is extracted ONCE for all its layers and timesteps (one
forward pass per video and timestep with every layer hooked, one
``extract_dataset`` call); then every cell (layer, timestep, preset, seed) is
trained and evaluated into the DB. A cell whose run (same backbone, dataset,
layer, timestep, preset, seed, training config and camera-metric mode) is
already in the DB is skipped; a cell whose training was interrupted resumes
from its last checkpoint; a failing cell is logged and counted and the sweep
goes on. :func:`sweep_table` aggregates the seeds of each cell into a mean and
a 95% Student-t interval.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidprobe.config import UNSET, ConfigError, apply_overrides, read_yaml
from vidprobe.metrics.registry import BENCHMARK_METRICS as DEFAULT_METRICS  # the published columns
from vidprobe.pipeline.sweep_config import SweepConfig, parse_sweep

#: A sweep config (or sweep run) error: the one config error type, its message naming the dotted key.
SweepError = ConfigError


def _short_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class BackboneEntry:
    """One backbone of the grid: what to instantiate and where its features go."""

    name: str  # registered backbone name
    kwargs: dict
    per_frame: bool
    label: str  # the name recorded in the store manifest and the DB (name, or name+perframe)
    layers: tuple[int, ...]
    timesteps: tuple[int | None, ...]
    num_frames: int | None = None  # frames fed per video (None: all)
    default_frames: bool = True  # num_frames is the spec's (the store name then carries no hash for it)

    @property
    def features_key(self) -> str:
        extra = {"kwargs": self.kwargs} if self.kwargs else {}
        if not self.default_frames:
            extra["num_frames"] = self.num_frames
        return self.label if not extra else f"{self.label}-{_short_hash(extra)}"


@dataclass
class Cell:
    entry: BackboneEntry
    layer: int
    timestep: int | None
    preset: str
    seed: int

    @property
    def backbone(self) -> str:
        return self.entry.label

    @property
    def name(self) -> str:
        t = "none" if self.timestep is None else self.timestep
        lay = "last" if self.layer == -1 else self.layer
        return f"{self.backbone}_L{lay}_T{t}_{self.preset}_s{self.seed}"


@dataclass
class SweepSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    consistency: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# config


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read and check a sweep YAML (``--set key=value`` overrides dotted fields); returns the checked mapping."""
    cfg = read_yaml(path, what="sweep config")
    apply_overrides(cfg, overrides)
    return check_sweep(cfg, str(Path(path)))


def check_sweep(cfg: dict, where: str = "sweep config") -> dict:
    """Validate a sweep config mapping (every key and value: :class:`~vidprobe.pipeline.sweep_config.SweepConfig`;
    then the checks across fields, :func:`~vidprobe.pipeline.sweep_config.parse_sweep`) and return it."""
    parse_sweep(cfg, where)
    return cfg


def _timestep_index(t: Any, where: str) -> int:
    from vidprobe.features.extract import _as_index

    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise SweepError(f"{where}: timesteps must be scheduler indices (int) or tau values (float), got {t!r}")
    i = _as_index(t)
    if not 0 <= i <= 1000:
        raise SweepError(f"{where}: timestep {t!r} is outside the 1000-step schedule")
    return i


def backbone_entries(cfg: dict | SweepConfig) -> list[BackboneEntry]:
    """The grid's backbones with their resolved layers and timesteps (registered names only)."""
    from vidprobe.backbones.base import registry

    reg = registry()
    sc = parse_sweep(cfg)
    g = sc.grid
    extract_frames = sc.extract.num_frames if sc.extract is not None else UNSET
    out: list[BackboneEntry] = []
    for i, b in enumerate(g.backbones):
        where = f"grid.backbones[{i}]"
        if b.name not in reg:
            from vidprobe.backbones.base import unknown_backbone_message

            raise SweepError(f"{where}: {unknown_backbone_message(b.name, sorted(reg))}", f"{where}.name")
        spec = reg[b.name][0]
        layers = b.layers or g.layers or [spec.default_layer]
        for lay in layers:
            if not (lay == -1 or 1 <= lay <= spec.num_layers):
                raise SweepError(f"{where}: layer {lay!r} out of range for {b.name} (1..{spec.num_layers}, or -1 = last)",
                                 f"{where}.layers")
        if spec.default_timestep is None:
            ts: list[int | None] = [None]
        else:
            ts = [_timestep_index(t, where) for t in (b.timesteps or g.timesteps or [spec.default_timestep])]
        label = b.label or (f"{b.name}+perframe" if b.per_frame else b.name)
        nf = b.num_frames if b.num_frames is not UNSET else extract_frames if extract_frames is not UNSET else spec.num_frames
        if nf is not None and nf < 1:
            raise SweepError(f"{where}: num_frames must be a positive integer or null, got {nf!r}", f"{where}.num_frames")
        out.append(BackboneEntry(b.name, dict(b.kwargs), b.per_frame, str(label), tuple(dict.fromkeys(layers)),
                                 tuple(dict.fromkeys(ts)), nf, nf == spec.num_frames))
    keys = [e.features_key for e in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SweepError(f"grid.backbones: {dup[0]} is listed twice (give the entries different kwargs or a 'label')",
                         "grid.backbones")
    return out


def plan_cells(cfg: dict | SweepConfig) -> list[Cell]:
    """Every cell of the grid: each backbone entry's layers x timesteps x presets x seeds."""
    sc = parse_sweep(cfg)
    cells = []
    for e in backbone_entries(sc):
        for layer, t, preset, seed in itertools.product(e.layers, e.timesteps, sc.grid.presets or ["reference"],
                                                        sc.grid.seeds or [42]):
            cells.append(Cell(e, layer, t, str(preset), int(seed)))
    names = [c.name for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError(f"grid: cell {dup[0]} appears twice (give one of the backbone entries a distinct 'label')", "grid")
    return cells


def cell_train_config(cfg: dict, cell: Cell):
    """The TrainConfig of one cell and its hash (over everything that shapes the result)."""
    from vidprobe.probe.train import TrainConfig

    out = Path(cfg["out"])
    t = copy.deepcopy(cfg.get("train") or {})
    probe = dict(t.pop("probe", None) or {})
    probe["preset"] = cell.preset
    t.update(features=str(out / "features" / cell.entry.features_key), dataset=str(cfg["dataset"]), labels=cfg.get("labels"),
             layer=cell.layer, timestep=cell.timestep, seed=cell.seed, probe=probe, name=cell.name, out="-",
             compat=cfg.get("compat", "clean"))
    tc = TrainConfig.from_dict(t)
    h = train_hash(tc.to_dict(), cfg.get("compat", "clean"))
    tc.out = str(out / "runs" / f"{cell.name}-{h[:8]}")
    return tc, h


#: training fields that never change what a run computes (where and how fast it loads), left out of its hashes
NEUTRAL_TRAIN_FIELDS = ("out", "name", "loader")


def train_hash(train_dict: dict, compat: str) -> str:
    d = {k: v for k, v in train_dict.items() if k not in NEUTRAL_TRAIN_FIELDS}
    return _short_hash({"train": d, "compat": compat}, 64)


def find_done(db, cfg: dict, cell: Cell, h: str) -> dict | None:
    """The finished probe run of this cell with the same training config, or None."""
    for r in reversed(db.runs(status="done", kind="probe", backbone=cell.backbone, dataset=str(cfg["dataset"]),
                              layer=cell.layer, timestep=cell.timestep, probe=cell.preset, seed=cell.seed)):
        c = r.get("config") or {}
        if "train" in c and train_hash(c["train"], (c.get("eval") or {}).get("compat", "clean")) == h:
            return r
    return None


# ----------------------------------------------------------------------------------------------
# a video model fed one frame at a time


class Labelled:
    """A registered backbone recorded under another name (a grid entry's ``label``: the store manifest and the DB
    then name it so, e.g. a model and its ``random_init`` twin). The inner backbone is built on the first call,
    so a finished store never loads the model."""

    def __init__(self, name: str, kwargs: dict | None = None, label: str | None = None):
        from vidprobe.backbones.base import registry

        base, self._factory = registry()[name]
        self._kwargs = dict(kwargs or {})
        self._inner = None
        self.spec = self._spec(base, name, label)

    @staticmethod
    def _spec(base, name: str, label: str | None):
        return replace(base, name=label or name)

    def inner(self):
        if self._inner is None:
            self._inner = self._factory(**self._kwargs)
        return self._inner

    def extract(self, video, layers, timesteps=(None,), clip=None):
        return self.inner().extract(video, layers, timesteps, clip=clip)


def entry_backbone(e: BackboneEntry):
    """What a grid entry extracts with: its registered name, or a wrapper recording it under its label (fed frame
    by frame for ``per_frame``)."""
    if e.per_frame:
        return PerFrame(e.name, e.kwargs, e.label)
    return Labelled(e.name, e.kwargs, e.label) if e.label != e.name else e.name


class PerFrame(Labelled):
    """Wrap a backbone so that every frame is fed alone (a clip of length 1) instead of the whole video.

    The temporal-reasoning control: the same weights, with no other frame to attend to. Each frame
    costs one forward pass (and, for diffusion models, one VAE encoding and its own noise draw).
    Built on the first call, as :class:`Labelled`.
    """

    @staticmethod
    def _spec(base, name: str, label: str | None):
        return replace(base, name=label or f"{name}+perframe", num_frames=None,
                       frame_layout=f"per-frame (each frame fed alone to {name})",
                       description=f"{name} fed one frame at a time. {base.description}")

    def extract(self, video, layers, timesteps=(None,), clip=None):
        import torch

        from vidprobe.backbones.base import FeatureSet

        inner = self.inner()
        maps: dict = {}
        for t in range(video.shape[0]):
            fs = inner.extract(video[t : t + 1], layers, timesteps, clip=None if clip is None else clip.select([t]))
            n = int(fs.frame_index[0])
            for k, v in fs.maps.items():
                maps.setdefault(k, []).append(v[n : n + 1])
        return FeatureSet({k: torch.cat(v) for k, v in maps.items()}, torch.arange(video.shape[0]),
                          info={"layout": self.spec.frame_layout})


# ----------------------------------------------------------------------------------------------
# the run


def run_sweep(cfg: dict, dry_run: bool = False, progress: bool = True, echo: Callable[[str], Any] = print) -> SweepSummary:
    """Run (or with ``dry_run`` only print) every cell of a checked sweep config."""
    from vidprobe.features.extract import extract_dataset
    from vidprobe.probe import train as train_mod
    from vidprobe.pipeline.evaluate import evaluate_run
    from vidprobe.results import ResultsDB

    cells = plan_cells(cfg)
    out = Path(cfg["out"])
    db_path = Path(cfg.get("db") or out / "results.db")
    ext = {k: v for k, v in (cfg.get("extract") or {}).items() if k != "num_frames"}  # num_frames: per entry
    summary = SweepSummary()
    plans = [(c, *cell_train_config(cfg, c)) for c in cells]
    echo(f"[sweep] {len(cells)} cells -> {out} (results: {db_path})")
    by_entry: dict[str, list] = {}
    for p in plans:
        by_entry.setdefault(p[0].entry.features_key, []).append(p)

    def done_in_db(group) -> set[str]:
        if not db_path.exists():
            return set()
        with ResultsDB(db_path) as db:
            return {c.name for c, _, h in group if find_done(db, cfg, c, h) is not None}

    if dry_run:
        for key, group in by_entry.items():
            e = group[0][0].entry
            done = done_in_db(group)
            echo(f"  {e.label}{' ' + json.dumps(e.kwargs) if e.kwargs else ''}: ONE extraction of layers {list(e.layers)} x "
                 f"timesteps {list(e.timesteps)}, {e.num_frames or 'all'} frames per video -> {out / 'features' / key}")
            for c, tc, _ in group:
                echo(f"    {'[done] ' if c.name in done else ''}{c.name} -> {tc.out}")
        return summary

    for key, group in by_entry.items():
        e = group[0][0].entry
        done = done_in_db(group)
        summary.skipped += [c.name for c, _, _ in group if c.name in done]
        todo = [p for p in group if p[0].name not in done]
        if not todo:
            echo(f"[sweep] {e.label}: all {len(group)} cells already in the DB")
        else:
            feats = out / "features" / key
            layers = sorted({c.layer for c, _, _ in todo})
            ts = sorted({c.timestep for c, _, _ in todo}, key=lambda x: (x is None, x))
            echo(f"[sweep] {e.label}: extracting layers {layers} x timesteps {ts} in one pass per video -> {feats}")
            try:
                bb = entry_backbone(e)
                es = extract_dataset(bb, cfg["dataset"], feats, layers, ts, backbone_kwargs=e.kwargs,
                                     num_frames=e.num_frames, progress=progress, **ext)
                if es.skipped:
                    echo(f"[sweep] {e.label}: {len(es.skipped)} video(s) skipped during extraction (see the log)")
            except Exception as ex:  # noqa: BLE001 - one backbone failing must not stop the sweep
                for c, _, _ in todo:
                    summary.failed[c.name] = f"extraction: {type(ex).__name__}: {ex}"
                echo(f"[sweep] {e.label}: extraction FAILED: {type(ex).__name__}: {ex}")
                continue
            for c, tc, _ in todo:
                try:
                    resume = train_mod.find_checkpoint(Path(tc.out), "last") is not None
                    echo(f"[sweep] {c.name}: {'resuming' if resume else 'training'} -> {tc.out}")
                    train_mod.train(tc, resume=resume, progress=progress)
                    res = evaluate_run(tc.out, which="last", compat=cfg.get("compat", "clean"), db_path=db_path,
                                       progress=progress)
                    if res.failed_clips:  # a diverged probe: recorded (with its failure counts), never counted as done
                        summary.failed[c.name] = (f"{len(res.failed_clips)} evaluation clip(s) with non-finite "
                                                  "predictions (diverged probe); see metrics.json")
                        echo(f"[sweep] {c.name}: {summary.failed[c.name]}")
                    else:
                        summary.done.append(c.name)
                except Exception as ex:  # noqa: BLE001 - a failing cell is counted; the sweep goes on
                    summary.failed[c.name] = f"{type(ex).__name__}: {ex}"
                    echo(f"[sweep] {c.name} FAILED: {type(ex).__name__}: {ex}\n{traceback.format_exc(limit=-3)}")
        if cfg.get("consistency"):
            _run_consistency(cfg, e, group, db_path, summary, progress, echo)
    echo(f"[sweep] done: {len(summary.done)} trained, {len(summary.skipped)} already in the DB, {len(summary.failed)} failed"
         + (f", {len(summary.consistency)} consistency scores" if summary.consistency else ""))
    for k, v in summary.failed.items():
        echo(f"  failed {k}: {v}")
    return summary


def _run_consistency(cfg, e: BackboneEntry, group, db_path: Path, summary: SweepSummary, progress: bool, echo) -> None:
    from vidprobe.pipeline.consistency import record_consistency

    opts = dict(cfg["consistency"]) if isinstance(cfg["consistency"], dict) else {}
    sampler = (cfg.get("train") or {}).get("sampler") or {}  # score the views the probe sees
    opts.setdefault("frames", int(sampler.get("num_frames", 4)))
    opts.setdefault("max_frame", int(sampler.get("max_frame", 76)))
    feats = Path(cfg["out"]) / "features" / e.features_key
    if not (feats / "manifest.json").exists():
        return
    for layer, t in sorted({(c.layer, c.timestep) for c, _, _ in group}, key=str):
        what = f"consistency {e.label} L{layer} T{t}"
        try:
            rid = record_consistency(db_path, feats, cfg["dataset"], layer=layer, timestep=t, labels=cfg.get("labels"),
                                     progress=progress, skip_done=True, **opts)
            summary.consistency.append(what)
            echo(f"[sweep] {what}: run {rid}")
        except Exception as ex:  # noqa: BLE001
            summary.failed[what] = f"{type(ex).__name__}: {ex}"
            echo(f"[sweep] {what} FAILED: {type(ex).__name__}: {ex}")


# ----------------------------------------------------------------------------------------------
# tables




def sweep_table(db_path: str | Path, metrics=DEFAULT_METRICS, confidence: float = 0.95, **filters: Any) -> list[dict[str, Any]]:
    """One row per setting: each metric's mean over seeds with a Student-t interval.

    A setting is (backbone, dataset, layer, timestep, probe preset, training config without the seed,
    camera-metric mode); its short hash is ``setting``. Row keys: the cell fields, ``setting``, ``seeds`` (sorted list), ``n`` (how many), and per metric ``<m>`` (mean),
    ``<m>_ci_low``, ``<m>_ci_high`` (NaN with fewer than 2 seeds). When a seed was evaluated several
    times, its latest run counts. ``filters`` select runs as :meth:`ResultsDB.runs` does.
    """
    from vidprobe.metrics.stats import mean_ci_t
    from vidprobe.results import ResultsDB

    with ResultsDB(db_path) as db:
        rows = db.table(metrics=list(metrics), kind="probe", **filters)
        configs = {r["run_id"]: r["config"] for r in db.runs(status="done", kind="probe", **filters)}
    groups: dict[tuple, dict[Any, dict]] = {}
    for r in rows:  # ordered by run_id: a later run of the same seed replaces an earlier one
        key = (r.get("backbone"), r.get("dataset"), r.get("layer"), r.get("timestep"), r.get("probe"),
               _setting_hash(configs.get(r["run_id"]) or {}))
        groups.setdefault(key, {})[r.get("seed")] = r
    out = []
    for (bb, ds, layer, t, probe, setting), by_seed in groups.items():
        rs = list(by_seed.values())
        row: dict[str, Any] = {"backbone": bb, "dataset": ds, "layer": layer, "timestep": t, "probe": probe,
                               "setting": setting, "seeds": sorted(by_seed, key=lambda s: (s is None, s)), "n": len(rs)}
        for m in metrics:
            ci = mean_ci_t([r[m] for r in rs if r.get(m) is not None], confidence)
            row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci.estimate, ci.low, ci.high
        out.append(row)
    return out


def _setting_hash(config: dict) -> str:
    """What makes runs seeds of one setting: their training config without seed, name and run dir, plus the metric mode."""
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in ("seed", *NEUTRAL_TRAIN_FIELDS)}
    return _short_hash({"train": train, "compat": (config.get("eval") or {}).get("compat", "clean")})


def format_sweep_table(rows: list[dict], metrics=DEFAULT_METRICS) -> str:
    def f(r, m):
        v, lo, hi = r.get(m), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")
        if v is None or math.isnan(v):
            return "-"
        return f"{v:.4f}" if lo is None or math.isnan(lo) else f"{v:.4f} [{lo:.4f}, {hi:.4f}]"

    from vidprobe.metrics.registry import spec

    head = ["backbone", "layer", "timestep", "probe", "n"] + [spec(m).key_column(scaled=False) for m in metrics]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join([str(r["backbone"]), str(r["layer"]), str(r["timestep"]), str(r["probe"]), str(r["n"])]
                                + [f(r, m) for m in metrics]))
    return "\n".join(lines)
