"""`vidprobe sweep CONFIG`: a grid of probing experiments, resumable, recorded in one results DB.

Config (YAML)::

    dataset: /data/co3d_ref          # any layout vidprobe reads
    labels: /data/co3d_labels        # optional labels directory (VGGT pseudo-labels)
    out: sweeps/wan                  # features/ and runs/ go here
    db: sweeps/wan/results.db
    compat: clean                    # or reference (the release's camera AUC variant)
    train: {epochs: 75, batch_size: 10, probe: {preset: reference}}   # any TrainConfig field
    grid:
      backbones:                     # name, or {name:, kwargs: {...}}
        - wan2.1-t2v-14b
      layers: [11, 21, 31]           # default: each backbone's reference layer
      timesteps: [249, 749]          # default: the reference timestep (ignored for non-diffusion models)
      presets: [reference]           # probe presets
      seeds: [42]

Each backbone is extracted ONCE for all its layers and timesteps (one pass
per video and timestep, all layers hooked); then every cell (layer, timestep,
preset, seed) is trained and evaluated. Cells already in the DB are skipped;
a cell whose training was interrupted resumes from its last checkpoint; a
failing cell is reported and counted, and the sweep goes on.
"""

from __future__ import annotations

import copy
import itertools
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from vidprobe.cli import app


class SweepError(ValueError):
    pass


@dataclass
class Cell:
    backbone: str
    kwargs: dict
    layer: int
    timestep: int | None
    preset: str
    seed: int

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


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> dict:
    from vidprobe.probe.train import set_by_path

    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise SweepError(f"sweep config not found: {p}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{p}: invalid YAML: {e}") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise SweepError(f"--set expects key=value, got {ov!r}")
        k, v = ov.split("=", 1)
        set_by_path(cfg, k.strip(), yaml.safe_load(v))
    known = {"dataset", "labels", "out", "db", "compat", "train", "grid", "description"}
    bad = sorted(set(cfg) - known)
    if bad:
        raise SweepError(f"{p}: unknown field(s) {bad}; known: {sorted(known)}")
    for req in ("dataset", "out", "grid"):
        if req not in cfg:
            raise SweepError(f"{p}: field '{req}' is required")
    gbad = sorted(set(cfg["grid"]) - {"backbones", "layers", "timesteps", "presets", "seeds"})
    if gbad:
        raise SweepError(f"{p}: unknown grid field(s) {gbad}")
    if not cfg["grid"].get("backbones"):
        raise SweepError(f"{p}: grid.backbones must list at least one backbone")
    return cfg


def plan_cells(cfg: dict) -> list[Cell]:
    from vidprobe.backbones.base import registry

    reg = registry()
    g = cfg["grid"]
    cells = []
    for b in g["backbones"]:
        name, kwargs = (b, {}) if isinstance(b, str) else (b["name"], dict(b.get("kwargs", {})))
        if name not in reg:
            raise SweepError(f"grid.backbones: unknown backbone {name!r}; see `vidprobe backbones`")
        spec = reg[name][0]
        layers = g.get("layers") or [spec.default_layer]
        ts = [None] if spec.default_timestep is None else (g.get("timesteps") or [spec.default_timestep])
        for layer, t, preset, seed in itertools.product(layers, ts, g.get("presets") or ["reference"], g.get("seeds") or [42]):
            cells.append(Cell(name, kwargs, int(layer), t, str(preset), int(seed)))
    return cells


def run_sweep(cfg: dict, dry_run: bool = False, progress: bool = True, echo=print) -> SweepSummary:
    from vidprobe.features.extract import extract_dataset
    from vidprobe.probe.evaluate import evaluate_run
    from vidprobe.probe.train import TrainConfig, find_checkpoint, train
    from vidprobe.results import ResultsDB

    cells = plan_cells(cfg)
    out = Path(cfg["out"])
    db_path = Path(cfg.get("db") or out / "results.db")
    summary = SweepSummary()
    echo(f"[sweep] {len(cells)} cells -> {out} (results: {db_path})")
    if dry_run:
        for c in cells:
            echo(f"  {c.name}")
        return summary
    by_bb: dict[str, list[Cell]] = {}
    for c in cells:
        by_bb.setdefault(c.backbone, []).append(c)
    for bb, bcells in by_bb.items():
        with ResultsDB(db_path) as db:
            todo = [c for c in bcells if db.find_run(kind="probe", name=c.name, status="done") is None]
        summary.skipped += [c.name for c in bcells if c not in todo]
        if not todo:
            echo(f"[sweep] {bb}: all {len(bcells)} cells already in the DB")
            continue
        feats = out / "features" / bb
        layers = sorted({c.layer for c in todo})
        ts = sorted({c.timestep for c in todo}, key=lambda x: (x is None, x))
        echo(f"[sweep] {bb}: extracting layers {layers} x timesteps {ts} in one pass per video")
        try:
            extract_dataset(bb, cfg["dataset"], feats, layers, ts, backbone_kwargs=todo[0].kwargs, progress=progress)
        except Exception as e:  # noqa: BLE001 - one backbone failing must not stop the sweep
            for c in todo:
                summary.failed[c.name] = f"extraction: {type(e).__name__}: {e}"
            echo(f"[sweep] {bb}: extraction FAILED: {e}")
            continue
        for c in todo:
            try:
                tcfg = copy.deepcopy(cfg.get("train") or {})
                probe = dict(tcfg.pop("probe", {}) or {})
                probe["preset"] = c.preset
                tcfg.update(
                    features=str(feats), dataset=cfg["dataset"], labels=cfg.get("labels"), layer=c.layer,
                    timestep=c.timestep, name=c.name, out=str(out / "runs" / c.name), seed=c.seed, probe=probe,
                )
                run_cfg = TrainConfig.from_dict(tcfg)
                resume = find_checkpoint(Path(run_cfg.out), "last") is not None
                echo(f"[sweep] {c.name}: {'resuming' if resume else 'training'}")
                train(run_cfg, resume=resume, progress=progress)
                evaluate_run(run_cfg.out, which="last", compat=cfg.get("compat", "clean"), db_path=db_path, progress=progress)
                summary.done.append(c.name)
            except Exception as e:  # noqa: BLE001
                summary.failed[c.name] = f"{type(e).__name__}: {e}"
                echo(f"[sweep] {c.name} FAILED: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
    echo(f"[sweep] done: {len(summary.done)} trained, {len(summary.skipped)} already in the DB, {len(summary.failed)} failed")
    for k, v in summary.failed.items():
        echo(f"  failed {k}: {v}")
    return summary


def sweep_table(db_path: str | Path, metrics=("point_err", "depth_err", "auc_5", "auc_30")) -> list[dict[str, Any]]:
    """Rows per (backbone, layer, timestep, probe) with each metric's mean and 95% t-interval over seeds."""
    from vidprobe.metrics.stats import mean_ci_t
    from vidprobe.results import ResultsDB

    with ResultsDB(db_path) as db:
        rows = db.table(metrics=list(metrics), kind="probe")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("backbone"), r.get("layer"), r.get("timestep"), r.get("probe")), []).append(r)
    out = []
    for (bb, layer, t, probe), rs in groups.items():
        row: dict[str, Any] = {"backbone": bb, "layer": layer, "timestep": t, "probe": probe, "seeds": len(rs)}
        for m in metrics:
            vals = [r[m] for r in rs if r.get(m) is not None]
            if not vals:
                row[m] = None
                continue
            ci = mean_ci_t(vals)
            row[m] = ci.estimate
            row[f"{m}_ci"] = (ci.low, ci.high)
        out.append(row)
    return out


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Sweep YAML (see configs/paper/ and configs/studies/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set dataset=/data/co3d_ref --set train.epochs=10"),
    dry_run: bool = typer.Option(False, help="Print the cells and exit."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Run a grid of backbones x layers x timesteps x probe presets x seeds.

    Extracts each backbone once (all layers and timesteps in one pass per
    video), trains and evaluates every cell into the results DB, skips cells
    already there, resumes interrupted ones, and reports failed cells without
    stopping.
    """
    try:
        cfg = load_sweep(config, set_)
        s = run_sweep(cfg, dry_run=dry_run, progress=progress, echo=typer.echo)
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if s.failed and not s.done and not s.skipped:
        raise typer.Exit(1)
