"""The training config schema (:class:`TrainConfig` and its sections) and :func:`load_config`.

Everything a run needs is one YAML file (see ``configs/``) read through :func:`vidprobe.config.load`:
every key is checked against this schema at load (an unknown one fails naming its dotted path, e.g.
``unknown key 'optim.lrr' (did you mean 'lr'?)``), every value coerced to its field's type. ``probe:``
and ``loss:`` are typed partial sections (:class:`vidprobe.probe.config.ProbeSection`,
:class:`vidprobe.probe.losses.LossSection`): only what was given is kept, and it is checked again as a
whole probe and loss when the config is validated, so a bad value there also fails at load.

Modes: ``compat: clean`` (default) or ``reference`` (the study's release). Every setting whose default
depends on the mode is a row of :data:`vidprobe.probe.config.MODE_SETTINGS` (probe, loss, optimiser,
sampler, steps per epoch); a field left out of the config takes the mode's value, an explicit one wins.
The run's ``config.yaml`` records the resolved values (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidprobe.config import ConfigError, Sentinel, apply_overrides, choices, load, read_yaml, to_plain
from vidprobe.data.sampling import METHODS
from vidprobe.probe.config import COMPAT_MODES, KEEP, MODE_SETTINGS, ProbeConfig, ProbeSection
from vidprobe.probe.losses import LossConfig, LossSection

__all__ = ["FROM_MODE", "WARMUP_RULES", "ConfigError", "LoaderConfig", "OptimConfig", "SamplerConfig", "TrainConfig",
           "load_config"]


#: Default of a mode-dependent field: replaced by the mode's value when the TrainConfig is built.
FROM_MODE: Any = Sentinel("from_mode", "<from compat mode>")
WARMUP_RULES = ("linear", "from_zero")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class OptimConfig:
    """AdamW + warm-up + cosine. Fields defaulting to FROM_MODE take the mode's value (MODE_SETTINGS)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_frac: float | None = FROM_MODE  # W = max(1, round(frac * total)); or:
    warmup_epochs: float | None = FROM_MODE  # W = int(warmup_epochs * total / epochs)
    warmup_rule: str = field(default=FROM_MODE, metadata=choices(WARMUP_RULES))  # linear | from_zero
    min_lr: float = 1e-6
    grad_clip: float = FROM_MODE  # 0: no clipping
    decay_all: bool = FROM_MODE  # weight decay on every parameter (else not on norms, biases, tokens)


@dataclass
class SamplerConfig:
    num_frames: int = 4
    min_gap: int = 5
    max_frame: int = 76
    snap: int = 4
    method: str = field(default=FROM_MODE, metadata=choices(METHODS))  # uniform | gaps_then_floor


@dataclass
class LoaderConfig:
    """How batches reach the device (``torch.utils.data.DataLoader`` settings): they change speed, never the batches.

    Samples stay in the store's dtype (fp16 / bf16) until :func:`vidprobe.probe.inputs.to_device` converts and
    checks them on the device, so a worker only reads bytes and stacks them.
    """

    workers: int | None = None  # worker processes per training process; None: min(4, CPUs per process - 1); 0: none
    prefetch_factor: int = 2  # batches each worker loads ahead (workers > 0)
    persistent_workers: bool = True  # keep the workers between passes (each evaluation reuses the eval loader's)
    pin_memory: bool | None = None  # page-locked batches for non_blocking copies; None: when the device is CUDA

    def num_workers(self) -> int:
        """``workers``, or the default: min(4, CPUs this process may use / training processes on the machine - 1)
        (torchrun's ``LOCAL_WORLD_SIZE`` processes share the machine's CPUs)."""
        if self.workers is not None:
            return self.workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(0, min(4, cpus // procs - 1))

    def validate(self) -> None:
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 0):
            raise ConfigError(f"config field 'loader.workers': expected an integer >= 0 or null (auto), got "
                              f"{self.workers!r}", "loader.workers")
        if not (isinstance(self.prefetch_factor, int) and self.prefetch_factor >= 1):
            raise ConfigError(f"config field 'loader.prefetch_factor': expected an integer >= 1, got "
                              f"{self.prefetch_factor!r}", "loader.prefetch_factor")


@dataclass
class TrainConfig:
    """One probe training run (the reference protocol's settings are the defaults; ``compat`` picks the mode)."""

    features: str = ""  # feature store directory
    dataset: str = ""  # dataset with ground truth (native, CO3D or DL3DV)
    layer: int | None = None  # None: the store's only layer; -1: the model's final output (Llast)
    timestep: int | None = None
    labels: str | None = None  # labels directory (ground truth from labels files)
    name: str = "probe"
    out: str = "runs/probe"
    train_split: str = "train"
    eval_split: str = "test"
    probe: ProbeSection = field(default_factory=lambda: ProbeSection({"preset": "reference"}, "probe"))
    loss: LossSection = field(default_factory=lambda: LossSection(None, "loss"))
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    epochs: int = 75
    max_steps: int | None = None  # cap on total steps (for quick runs)
    batch_size: int = 10  # clips per process
    seed: int = 42
    out_hw: tuple[int, int] | None = None  # default: the dataset's image size
    precision: str = field(default="auto", metadata=choices(PRECISIONS))  # auto (bf16 on GPU, fp32 on CPU)
    grad_checkpointing: bool = False
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends (every `checkpoint_epochs`)
    checkpoint_epochs: int = 1
    keep_checkpoints: int = 2
    eval_every_epochs: int = 0  # 0 = only at the end
    device: str = "auto"
    tensorboard: bool = False
    wandb: bool = False
    compat: str = field(default="clean", metadata=choices(COMPAT_MODES))  # the default of every MODE_SETTINGS row
    drop_last: bool = FROM_MODE  # steps per epoch floor(videos / global batch) instead of ceil

    def __post_init__(self) -> None:
        # a plain mapping (direct construction) becomes a checked section; always a copy of the caller's
        self.probe = ProbeSection(self.probe, "probe")
        self.loss = LossSection(self.loss, "loss")
        self._resolve_mode()

    def _resolve_mode(self) -> None:
        """Give every field still at FROM_MODE (and every absent probe / loss key) the mode's value."""
        if self.compat not in COMPAT_MODES:
            raise ConfigError(f"config field 'compat': expected one of {COMPAT_MODES}, got {self.compat!r}", "compat")
        o = self.optim
        if isinstance(o, OptimConfig):  # the warm-up length is ONE of warmup_frac / warmup_epochs
            frac, ep = o.warmup_frac, o.warmup_epochs
            if frac is not FROM_MODE and ep is FROM_MODE and frac is not None:
                o.warmup_epochs = None
            elif ep is not FROM_MODE and frac is FROM_MODE and ep is not None:
                o.warmup_frac = None
        owners = {"optim": self.optim, "sampler": self.sampler, "train": self}
        for st in MODE_SETTINGS:
            v = st.value(self.compat)
            if st.section in owners:
                obj = owners[st.section]
                if getattr(obj, st.field, None) is FROM_MODE:
                    setattr(obj, st.field, copy.deepcopy(v))
            elif v is not KEEP:
                getattr(self, st.section).setdefault(st.field, copy.deepcopy(v))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Load (every key and value checked, see :func:`vidprobe.config.load`) and :meth:`validate`."""
        cfg = load(cls, d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Checks across fields, and the probe and loss sections as a whole probe and loss (at load, not at train)."""
        if not self.features:
            raise ConfigError("config field 'features' (feature store directory) is required", "features")
        if not self.dataset:
            raise ConfigError("config field 'dataset' (ground-truth dataset directory) is required", "dataset")
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("batch_size and epochs must be >= 1", "batch_size")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, bf16 or fp32, got {self.precision!r}", "precision")
        o = self.optim
        if o.warmup_frac is not None and o.warmup_epochs is not None:
            raise ConfigError("config fields 'optim.warmup_frac' and 'optim.warmup_epochs': set only one (the other null)",
                              "optim.warmup_frac")
        if o.warmup_frac is None and o.warmup_epochs is None:
            raise ConfigError("config fields 'optim.warmup_frac' / 'optim.warmup_epochs': one must be set",
                              "optim.warmup_frac")
        for name in ("warmup_frac", "warmup_epochs", "grad_clip"):
            v = getattr(o, name)
            if v is not None and not v >= 0:
                raise ConfigError(f"config field 'optim.{name}': expected a number >= 0, got {v!r}", f"optim.{name}")
        if o.warmup_rule not in WARMUP_RULES:
            raise ConfigError(f"config field 'optim.warmup_rule': expected one of {WARMUP_RULES}, got {o.warmup_rule!r}",
                              "optim.warmup_rule")
        if self.sampler.method not in METHODS:
            raise ConfigError(f"config field 'sampler.method': expected one of {METHODS}, got {self.sampler.method!r}",
                              "sampler.method")
        for where, v in (("optim.decay_all", o.decay_all), ("drop_last", self.drop_last)):
            if not isinstance(v, bool):
                raise ConfigError(f"config field {where!r}: expected true or false, got {v!r}", where)
        self.loader.validate()
        self.probe_config(in_channels=1)
        self.loss_config()

    def probe_config(self, in_channels: int, out_hw: tuple[int, int] | None = None) -> ProbeConfig:
        """The probe of this run: the preset, then the mode, then the ``probe:`` fields (errors name ``probe``)."""
        pc = dict(self.probe)
        preset = pc.pop("preset", "reference")
        kw = {"in_channels": in_channels, **({"out_hw": tuple(out_hw)} if out_hw is not None else {})}
        try:
            return ProbeConfig.preset(preset, **kw, **pc)
        except ConfigError as e:
            raise ConfigError(f"config field 'probe': {e}", f"probe.{e.path}" if e.path else "probe") from None

    def loss_config(self) -> LossConfig:
        """The :class:`LossConfig` of this run (errors name ``loss``)."""
        try:
            return LossConfig.from_dict(self.loss)
        except ConfigError as e:
            raise ConfigError(f"config field 'loss': {e}", f"loss.{e.path}" if e.path else "loss") from None

    def to_dict(self) -> dict:
        """Plain dicts, lists and scalars (``config.yaml``, the sweep's hash): the probe and loss keys as given."""
        return to_plain(self)


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from ``base`` updated by the YAML file at ``path``, then ``--set`` ``overrides``."""
    d: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        d.update(read_yaml(path))
    return TrainConfig.from_dict(apply_overrides(d, overrides))
