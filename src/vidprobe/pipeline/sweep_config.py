"""The sweep config schema (:class:`SweepConfig`), loaded through :func:`vidprobe.config.load`.

Every key of a sweep YAML is checked at load, down to ``grid.backbones[2].timesteps[0]`` and
``train.optim.lr`` (an unknown one fails naming its dotted path); :func:`parse_sweep` adds the checks
across fields. The ``train:`` section is the base of every cell's :class:`~vidprobe.probe.train_config.TrainConfig`
(:class:`TrainBase`: the fields given, typed; those the sweep sets per cell are refused), so it is
checked as a whole training config too. The sweep itself (:mod:`vidprobe.pipeline.sweep`) reads the checked
mapping; nothing here changes what a cell trains or its hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vidprobe.config import UNSET, ConfigError, Overrides, choices, load
from vidprobe.pipeline.launcher_config import LauncherConfig
from vidprobe.probe.config import COMPAT_MODES, PRESETS, ProbeSection
from vidprobe.probe.train_config import TrainConfig

__all__ = ["CELL_OWNED", "BackboneEntryConfig", "ConsistencyConfig", "ExtractConfig", "GridConfig", "SweepConfig",
           "TrainBase", "parse_sweep"]

#: Fields of the train section the sweep sets per cell (a base value would be overwritten silently).
CELL_OWNED = ("features", "dataset", "labels", "layer", "timestep", "name", "out", "seed")


class CellProbeSection(ProbeSection):
    """``train.probe`` of a sweep: as a run's ``probe:``, without ``preset`` (the grid's ``presets`` give it)."""

    excluded = {**ProbeSection.excluded, "preset": "is set per cell: list presets in grid.presets"}


class TrainBase(Overrides):
    """The sweep's ``train:`` section: any :class:`TrainConfig` field but those set per cell (:data:`CELL_OWNED`)."""

    schema = TrainConfig
    types = {"probe": CellProbeSection}
    excluded = {k: "is set per cell by the sweep (use the top-level field or the grid)" for k in CELL_OWNED}


@dataclass
class ExtractConfig:
    """``extract:``, options of :func:`vidprobe.features.extract.extract_dataset` (given ones are passed on)."""

    dtype: str = "fp16"
    num_frames: int | None = UNSET  # frames fed per video (null: all); unset: each backbone's own
    max_videos: int | None = None
    fail_fast: int = 3


@dataclass
class ConsistencyConfig:
    """``consistency:`` options of the feature-consistency score (unset: its defaults; frames and max_frame:
    the training sampler's)."""

    max_queries: int = UNSET
    max_videos: int | None = UNSET
    frames: int = UNSET
    max_frame: int = UNSET
    split: str = UNSET


@dataclass
class BackboneEntryConfig:
    """One entry of ``grid.backbones``: a registered name, or a mapping (a bare name is ``{name: ...}``)."""

    __config_shorthand__ = "name"

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the backbone's build()
    layers: list[int] | None = None  # default: grid.layers, else the spec's reference layer
    timesteps: list[int | float] | None = None  # scheduler indices (int) or tau (float in (0, 1))
    per_frame: bool = False  # the video model fed one frame at a time
    label: str | None = None  # the name in the store and the DB (default: name, or name+perframe)
    num_frames: int | None = UNSET  # frames fed per video (null: all); unset: extract.num_frames, else the spec's


@dataclass
class GridConfig:
    """``grid:``: backbones x layers x timesteps x probe presets x seeds."""

    backbones: list[BackboneEntryConfig]
    layers: list[int] | None = None
    timesteps: list[int | float] | None = None
    presets: list[str] | None = None  # default: [reference]
    seeds: list[int] | None = None  # default: [42]


@dataclass
class SweepConfig:
    """A sweep YAML (see :mod:`vidprobe.pipeline.sweep` for the fields' meaning)."""

    dataset: str
    out: str
    grid: GridConfig
    description: str = ""
    labels: str | None = None
    db: str | None = None  # default: OUT/results.db
    compat: str = field(default="clean", metadata=choices(COMPAT_MODES))
    extract: ExtractConfig | None = None
    train: TrainBase | None = None
    consistency: ConsistencyConfig | bool | None = None
    launcher: LauncherConfig | None = None  # how `--launcher` submits the cells (pipeline/launcher_config.py)


def parse_sweep(cfg: Mapping, where: str = "sweep config") -> SweepConfig:
    """Load and check a sweep mapping: every key and value, then the checks across fields."""
    if isinstance(cfg, SweepConfig):
        return cfg
    sc = load(SweepConfig, cfg, where=where)

    def bad(msg: str, path: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}", path)

    for req in ("dataset", "out"):
        if not getattr(sc, req):
            raise bad(f"field '{req}' is required", req)
    try:
        if sc.launcher is not None:
            sc.launcher.validate()
    except ConfigError as e:
        raise bad(str(e), e.path) from None
    if not sc.grid.backbones:
        raise bad("grid.backbones must list at least one backbone", "grid.backbones")
    for i, p in enumerate(sc.grid.presets or []):
        if p not in PRESETS:
            raise bad(f"config field 'grid.presets[{i}]': unknown probe preset {p!r}; choose from {sorted(PRESETS)}",
                      f"grid.presets[{i}]")
    train = dict(sc.train or {})
    if "compat" in train and train["compat"] != sc.compat:
        raise bad(f"train.compat ({train['compat']!r}) differs from the top-level compat ({sc.compat!r}): set it "
                  "once, at the top level", "train.compat")
    try:  # the train section is a valid training config once a cell fills in its own fields
        TrainConfig.from_dict({**train, "features": "-", "dataset": "-", "compat": sc.compat})
    except ConfigError as e:
        raise bad(f"train: {e}", f"train.{e.path}" if e.path else "train") from None
    return sc
