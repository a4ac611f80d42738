"""`vidprobe run`: one backbone (or a few) from features to report, with its random-weights control beside it.

The shortest path for a researcher with their own model: name it (``hf:<repo or folder>``, a registered name or a
plugin's), point at a dataset, get ``OUT/report/report.html``. It is a sweep underneath (:mod:`vidprobe.pipeline.sweep`):
one extraction per backbone (all requested layers and timesteps in one pass per video), one probe per cell, every
step resumable, everything recorded in ``OUT/results.db``. The control is the same architecture with
``random_init=true`` (its own random weights, same input pipeline), labelled ``<name>-random-init``, so the report
can say how much of the score the trained weights earn over the architecture alone.

``quick=True`` trades the reference probe for a seconds-long CPU budget (the tiny preset, a few dozen steps, small
outputs): a first look that tests the pipeline on a new model, not a measurement.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: the ``train:`` section of a quick run: tiny probe, small outputs, a short schedule (CPU in minutes)
QUICK_TRAIN: dict[str, Any] = {
    "max_steps": 30, "epochs": 1000, "batch_size": 4, "out_hw": [32, 56],
    "optim": {"lr": 3.0e-3, "warmup_frac": 0.1},
}


@dataclass
class RunRequest:
    """What `vidprobe run` was asked: backbones, data, where to write, and how much to train."""

    backbones: list[str]
    dataset: str
    out: str
    layers: list[int] | None = None
    timesteps: list[int | float] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # build options for every backbone (-a KEY=VALUE)
    control: bool = True  # add each backbone's random-weights twin
    controls: list[str] = field(default_factory=list)  # extra control backbones (pixels, oracle)
    presets: list[str] | None = None
    seeds: list[int] | None = None
    quick: bool = False
    labels: str | None = None
    compat: str = "clean"
    overrides: list[str] = field(default_factory=list)  # ``key=value`` of the train section (``--set``, dotted keys)


def label_of(name: str) -> str:
    """The name a backbone is stored and reported under: ``hf:org/model`` -> ``hf-org--model`` (a directory name)."""
    return name.replace(":", "-").replace("/", "--")


def random_label(name: str) -> str:
    return f"{label_of(name)}-random-init"


def sweep_config(req: RunRequest, sampler_frames: int | None = None) -> dict[str, Any]:
    """The sweep mapping a run request stands for (checked by the sweep's own loader)."""
    entries: list[dict[str, Any]] = []
    for name in req.backbones:
        base = {"name": name, "kwargs": dict(req.kwargs)}
        if label_of(name) != name:
            base["label"] = label_of(name)
        if req.layers:
            base["layers"] = list(req.layers)
        if req.timesteps:
            base["timesteps"] = list(req.timesteps)
        entries.append(base)
        if req.control:
            entries.append({**base, "kwargs": {**req.kwargs, "random_init": True}, "label": random_label(name)})
    entries += [{"name": c} for c in req.controls]
    from vidprobe.config import apply_overrides
    from vidprobe.probe.train_config import SamplerConfig

    train: dict[str, Any] = copy.deepcopy(QUICK_TRAIN) if req.quick else {}  # overrides must not edit QUICK_TRAIN
    if sampler_frames is not None and sampler_frames < SamplerConfig().max_frame:
        train["sampler"] = {"max_frame": sampler_frames}  # short videos: sample within them
    apply_overrides(train, req.overrides)
    cfg: dict[str, Any] = {
        "description": f"vidprobe run: {', '.join(req.backbones)}" + (" (quick)" if req.quick else ""),
        "dataset": req.dataset,
        "out": req.out,
        "compat": req.compat,
        "grid": {"backbones": entries, "presets": req.presets or (["tiny"] if req.quick else ["reference"]),
                 "seeds": req.seeds or [42]},
    }
    if train:
        cfg["train"] = train
    if req.labels:
        cfg["labels"] = req.labels
    return cfg


def shortest_video(dataset: str) -> int | None:
    """Frames of the dataset's shortest video (None when it cannot be read cheaply)."""
    from vidprobe.data.open import open_dataset

    ds = open_dataset(dataset)
    counts = [ds.num_frames(v) for v in ds.videos()]
    return min(counts) if counts else None


def run(req: RunRequest, progress: bool = True, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Extract, train, evaluate and report; returns the sweep summary and the report's paths."""
    from vidprobe.pipeline.sweep import check_sweep, run_sweep
    from vidprobe.report.html import write_report

    frames = shortest_video(req.dataset)
    cfg = check_sweep(sweep_config(req, sampler_frames=frames))
    summary = run_sweep(cfg, progress=progress, echo=echo)
    out = Path(req.out)
    db = out / "results.db"
    paths: dict[str, Path] = {}
    if db.exists():
        paths = write_report(db, out / "report", title=f"vidprobe run: {', '.join(req.backbones)}")
    return {"summary": summary, "report": paths, "config": cfg}
