"""`vidprobe train CONFIG`: fit a probe on frozen features.

Everything a run needs is in one YAML file (see ``configs/``); ``--set
key=value`` overrides single fields. A run directory holds ``config.yaml``,
``log.jsonl`` + ``log.csv`` (every step), ``checkpoints/step_XXXXXXX/``
(``model.safetensors``, ``optimizer.safetensors``, ``state.json``) and
``best/`` + ``last/`` pointers. ``--resume`` continues exactly: samples are
drawn from seeds derived from (seed, epoch, video), so a resumed run sees the
same batches and ends with the same weights as an uninterrupted one.

Multi-GPU: run under ``torchrun``; each rank takes its slice of every global
batch and DDP averages the gradients (gloo on CPU, NCCL on GPU).

Modes: ``compat: clean`` (default) or ``reference`` (the study's release).
Every setting whose default depends on the mode is a row of
:data:`vidprobe.probe.config.MODE_SETTINGS` (probe, loss, optimiser, sampler,
steps per epoch); a field left out of the config takes the mode's value, an
explicit one wins. The run's ``config.yaml`` records the resolved values.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vidprobe.atomic import atomic_write_text as _atomic_write_text
from vidprobe.data.sampling import METHODS, FrameSampler
from vidprobe.probe.config import COMPAT_MODES, KEEP, MODE_SETTINGS
from vidprobe.probe.data import ProbeDataset, collate


class ConfigError(ValueError):
    pass


class _FromMode:
    """Default of a mode-dependent field: replaced by the mode's value when the TrainConfig is built."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<from compat mode>"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (_FromMode, ())


FROM_MODE: Any = _FromMode()
WARMUP_RULES = ("linear", "from_zero")


def _coerce(where: str, typ: str, value: Any) -> Any:
    """Check/convert a scalar config value against its annotation (``float``, ``int | None``, ``bool``, ``str``).

    YAML reads ``3e-4`` (no dot) as a string: numeric strings are accepted for float fields.
    """
    typ = typ.replace(" ", "")
    optional = typ.endswith("|None")
    base = typ[: -len("|None")] if optional else typ
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config field {where!r}: expected {base}, got null")
    if base == "float":
        if isinstance(value, bool):
            raise ConfigError(f"config field {where!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config field {where!r}: expected a number, got {value!r}") from None
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config field {where!r}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"config field {where!r}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"config field {where!r}: expected an integer, got {value!r}")
        return int(f)
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config field {where!r}: expected true or false, got {value!r}")
        return value
    if base == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config field {where!r}: expected a string, got {value!r}")
        return str(value)
    return value


def _coerce_fields(cls, d: dict, prefix: str = "") -> dict:
    out = dict(d)
    for f in fields(cls):
        if f.name in out and isinstance(f.type, str):
            out[f.name] = _coerce(prefix + f.name, f.type, out[f.name])
    return out


@dataclass
class OptimConfig:
    """AdamW + warm-up + cosine. Fields defaulting to FROM_MODE take the mode's value (MODE_SETTINGS)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_frac: float | None = FROM_MODE  # W = max(1, round(frac * total)); or:
    warmup_epochs: float | None = FROM_MODE  # W = int(warmup_epochs * total / epochs)
    warmup_rule: str = FROM_MODE  # linear | from_zero
    min_lr: float = 1e-6
    grad_clip: float = FROM_MODE  # 0: no clipping
    decay_all: bool = FROM_MODE  # weight decay on every parameter (else not on norms, biases, tokens)


@dataclass
class SamplerConfig:
    num_frames: int = 4
    min_gap: int = 5
    max_frame: int = 76
    snap: int = 4
    method: str = FROM_MODE  # uniform | gaps_then_floor (vidprobe.data.sampling)


@dataclass
class TrainConfig:
    """One probe training run (the reference protocol's settings are the defaults; ``compat`` picks the mode)."""

    features: str = ""  # feature store directory
    dataset: str = ""  # dataset with ground truth (native, CO3D or DL3DV)
    layer: int = -1  # -1: the only layer in the store
    timestep: int | None = None
    labels: str | None = None  # labels directory (ground truth from labels files)
    name: str = "probe"
    out: str = "runs/probe"
    train_split: str = "train"
    eval_split: str = "test"
    probe: dict[str, Any] = field(default_factory=lambda: {"preset": "reference"})
    loss: dict[str, Any] = field(default_factory=dict)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 75
    max_steps: int | None = None  # cap on total steps (for quick runs)
    batch_size: int = 10  # clips per process
    seed: int = 42
    out_hw: tuple[int, int] | None = None  # default: the dataset's image size
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    grad_checkpointing: bool = False
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends (every `checkpoint_epochs`)
    checkpoint_epochs: int = 1
    keep_checkpoints: int = 2
    eval_every_epochs: int = 0  # 0 = only at the end
    device: str = "auto"
    tensorboard: bool = False
    wandb: bool = False
    compat: str = "clean"  # clean | reference: the default of every setting in MODE_SETTINGS
    drop_last: bool = FROM_MODE  # steps per epoch floor(videos / global batch) instead of ceil

    def __post_init__(self) -> None:
        self._resolve_mode()

    def _resolve_mode(self) -> None:
        """Give every field still at FROM_MODE (and every absent probe / loss key) the mode's value."""
        if self.compat not in COMPAT_MODES:
            raise ConfigError(f"config field 'compat': expected one of {COMPAT_MODES}, got {self.compat!r}")
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
            elif v is not KEEP and isinstance(getattr(self, st.section), dict):
                sec = dict(getattr(self, st.section))
                sec.setdefault(st.field, copy.deepcopy(v))
                setattr(self, st.section, sec)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "optim" in d and isinstance(d["optim"], dict):
            bad = sorted(set(d["optim"]) - {f.name for f in fields(OptimConfig)})
            if bad:
                raise ConfigError(f"unknown optim field(s): {bad}")
            o = _coerce_fields(OptimConfig, dict(d["optim"]), "optim.")
            if "betas" in o:
                try:
                    o["betas"] = tuple(float(x) for x in o["betas"])
                except (TypeError, ValueError):
                    raise ConfigError(f"config field 'optim.betas': expected two numbers, got {o['betas']!r}") from None
                if len(o["betas"]) != 2:
                    raise ConfigError(f"config field 'optim.betas': expected two numbers, got {o['betas']!r}")
            d["optim"] = OptimConfig(**o)
        if "sampler" in d and isinstance(d["sampler"], dict):
            bad = sorted(set(d["sampler"]) - {f.name for f in fields(SamplerConfig)})
            if bad:
                raise ConfigError(f"unknown sampler field(s): {bad}")
            d["sampler"] = SamplerConfig(**_coerce_fields(SamplerConfig, d["sampler"], "sampler."))
        for sec in ("probe", "loss"):
            if sec in d and not isinstance(d[sec], dict):
                raise ConfigError(f"config field {sec!r}: expected a mapping, got {d[sec]!r}")
        d = _coerce_fields(cls, d)
        if d.get("out_hw") is not None:
            d["out_hw"] = tuple(int(x) for x in d["out_hw"])
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.features:
            raise ConfigError("config field 'features' (feature store directory) is required")
        if not self.dataset:
            raise ConfigError("config field 'dataset' (ground-truth dataset directory) is required")
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("batch_size and epochs must be >= 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        o = self.optim
        if o.warmup_frac is not None and o.warmup_epochs is not None:
            raise ConfigError("config fields 'optim.warmup_frac' and 'optim.warmup_epochs': set only one (the other null)")
        if o.warmup_frac is None and o.warmup_epochs is None:
            raise ConfigError("config fields 'optim.warmup_frac' / 'optim.warmup_epochs': one must be set")
        for name in ("warmup_frac", "warmup_epochs", "grad_clip"):
            v = getattr(o, name)
            if v is not None and not v >= 0:
                raise ConfigError(f"config field 'optim.{name}': expected a number >= 0, got {v!r}")
        if o.warmup_rule not in WARMUP_RULES:
            raise ConfigError(f"config field 'optim.warmup_rule': expected one of {WARMUP_RULES}, got {o.warmup_rule!r}")
        if self.sampler.method not in METHODS:
            raise ConfigError(f"config field 'sampler.method': expected one of {METHODS}, got {self.sampler.method!r}")
        for where, v in (("optim.decay_all", o.decay_all), ("drop_last", self.drop_last)):
            if not isinstance(v, bool):
                raise ConfigError(f"config field {where!r}: expected true or false, got {v!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        if self.out_hw is not None:
            d["out_hw"] = list(self.out_hw)
        return d


def set_by_path(d: dict, dotted: str, value: Any) -> None:
    """``--set optim.lr=3e-4``: assign a YAML-parsed value at a dotted path."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    cur[keys[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    d: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        d.update(loaded)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set expects key=value, got {ov!r}")
        k, v = ov.split("=", 1)
        set_by_path(d, k.strip(), yaml.safe_load(v))
    return TrainConfig.from_dict(d)


# ----------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# schedule, checkpoints


def lr_lambda(total_steps: int, warmup_frac: float, base_lr: float, min_lr: float):
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine from ``base_lr`` to ``min_lr``."""
    return _linear_cosine(total_steps, max(1, round(total_steps * warmup_frac)), base_lr, min_lr)


def warmup_steps(total_steps: int, optim: OptimConfig, epochs: int) -> int:
    """W: ``int(warmup_epochs * total / epochs)`` (the release's scaling) or ``round(frac * total)``; at least 1.

    (A full reference run has W = 10 x steps per epoch; W = 0 is possible only for a run capped by
    ``max_steps``, and the release's scheduler would then keep the lr ~0 for the whole run.)
    """
    if optim.warmup_epochs is not None:
        return max(1, int(optim.warmup_epochs * total_steps / epochs))
    return max(1, round(total_steps * optim.warmup_frac))


def lr_schedule(total_steps: int, optim: OptimConfig, epochs: int):
    """The lr factor of step ``s`` (``LambdaLR``), by ``optim.warmup_rule``:

    * ``linear``: ``(s + 1) / W`` for ``s < W``, then cosine from the base lr at step W to ``min_lr`` at the
      last step (:func:`lr_lambda`);
    * ``from_zero``: pl_bolts' ``LinearWarmupCosineAnnealingLR`` stepped once per step (the release):
      lr 0 at step 0, ``+ base / (W - 1)`` per step, the base lr at steps W-1 and W, then its chained
      cosine update down to ``min_lr`` at step ``total`` (W from :func:`warmup_steps`).
    """
    warm = warmup_steps(total_steps, optim, epochs)
    if optim.warmup_rule == "linear":
        return _linear_cosine(total_steps, warm, optim.lr, optim.min_lr)
    base, low = optim.lr, optim.min_lr
    lrs, lr = [], 0.0
    for step in range(total_steps + 1):
        if step == 0:
            lr = 0.0
        elif step < warm:
            lr = lr + base / (warm - 1)
        elif step == warm:
            lr = base
        else:
            span = total_steps - warm
            lr = (1 + math.cos(math.pi * (step - warm) / span)) / (1 + math.cos(math.pi * (step - warm - 1) / span)) * (
                lr - low
            ) + low
        lrs.append(lr / base)

    def f(step: int) -> float:
        return lrs[min(step, total_steps)]

    return f


def _linear_cosine(total_steps: int, warm: int, base_lr: float, min_lr: float):
    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        prog = min(1.0, (step - warm) / max(1, total_steps - warm))
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * prog))
        return lr / base_lr

    return f


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on every parameter (``decay_all``) or not on norms, biases and tokens."""
    if optim.decay_all:
        groups = [{"params": list(model.parameters()), "weight_decay": optim.weight_decay}]
    else:
        decay, no_decay = [], []
        for n_, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "token" in n_ or "norm" in n_ else decay).append(p)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def steps_in_epoch(videos: int, global_batch: int, drop_last: bool) -> int:
    """``ceil(videos / global batch)`` (the last batch wraps around to full), or ``floor`` with ``drop_last``."""
    if not drop_last:
        return max(1, math.ceil(videos / global_batch))
    if videos < global_batch:
        raise ConfigError(
            f"drop_last: {videos} training videos do not fill one global batch of {global_batch} "
            "(batch_size x processes); lower batch_size or set drop_last: false"
        )
    return videos // global_batch


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"{pid}.{k}"] = t.detach().cpu().contiguous()
    groups = sd["param_groups"]
    return tensors, {"param_groups": json.loads(json.dumps(groups, default=list))}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, model: torch.nn.Module, opt, sched, step: int, epoch_done: int, cfg: TrainConfig, keep: int) -> Path:
    ck_root = run_dir / "checkpoints"
    ck_root.mkdir(parents=True, exist_ok=True)
    final = ck_root / f"step_{step:07d}"
    tmp = ck_root / f".tmp_step_{step:07d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        opt_t, opt_meta = optimizer_to_tensors(opt)
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {
            "step": step,
            "epochs_done": epoch_done,
            "scheduler": sched.state_dict() if sched is not None else None,
            "optimizer_meta": opt_meta,
            "numpy_rng": None,
            "config": cfg.to_dict(),
        }
        (tmp / "state.json").write_text(json.dumps(state, default=str))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. disk full: leave nothing behind
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(ck_root / "last.json", json.dumps({"step": step, "path": final.name}))
    # prune old ones (never the best)
    best = _read_pointer(ck_root / "best.json")
    olds = sorted(p for p in ck_root.glob("step_*") if p.is_dir())
    for p in olds[:-keep] if keep > 0 else []:
        if best is None or p.name != best.get("path"):
            shutil.rmtree(p, ignore_errors=True)
    return final


def _read_pointer(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def find_checkpoint(run_dir: Path, which: str = "last") -> Path | None:
    ptr = _read_pointer(Path(run_dir) / "checkpoints" / f"{which}.json")
    if ptr is None:
        return None
    p = Path(run_dir) / "checkpoints" / ptr["path"]
    return p if (p / "model.safetensors").exists() else None


# ----------------------------------------------------------------------------------------------
# building blocks shared by train and evaluate


def open_inputs(cfg: TrainConfig):
    """Feature store, GT dataset and the (layer, timestep) to use."""
    from vidprobe.data.open import open_dataset
    from vidprobe.features.store import FeatureStore

    store = FeatureStore(cfg.features)
    keys = store.keys()
    if not keys:
        raise ConfigError(f"feature store {cfg.features} holds no features")
    layer, timestep = cfg.layer, cfg.timestep
    if layer == -1:
        layers = sorted({k[0] for k in keys})
        if len(layers) != 1:
            raise ConfigError(f"{cfg.features} holds layers {layers}: set 'layer' in the config")
        layer = layers[0]
    if timestep is None:
        ts = sorted({k[1] for k in keys if k[0] == layer}, key=lambda x: (x is None, x))
        if len(ts) == 1:
            timestep = ts[0]
        elif None not in ts:
            raise ConfigError(f"{cfg.features} holds timesteps {ts} for layer {layer}: set 'timestep'")
    if (layer, timestep) not in set(keys):
        raise ConfigError(f"{cfg.features} has no features for layer {layer}, timestep {timestep}; it has {sorted(keys, key=str)}")
    dataset = open_dataset(cfg.dataset, labels_dir=cfg.labels) if cfg.labels else open_dataset(cfg.dataset)
    return store, dataset, layer, timestep


def build_probe(cfg: TrainConfig, in_channels: int, out_hw: tuple[int, int]):
    from vidprobe.probe.config import ProbeConfig
    from vidprobe.probe.model import Probe

    pc = dict(cfg.probe)
    preset = pc.pop("preset", "reference")
    pcfg = ProbeConfig.preset(preset, in_channels=in_channels, out_hw=tuple(out_hw), **pc)
    if cfg.grad_checkpointing:
        pcfg.grad_checkpointing = True
    return Probe(pcfg), pcfg


def dataset_hw(dataset, video: str) -> tuple[int, int]:
    return tuple(dataset.load(video, [0]).images.shape[-2:])  # type: ignore[return-value]


def autocast_ctx(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    out["features"] = batch["features"].to(device, non_blocking=True)
    out["gt"] = {k: v.to(device, non_blocking=True) for k, v in batch["gt"].items()}
    return out


# ----------------------------------------------------------------------------------------------
# the loop


class RunLogger:
    """JSONL + CSV always; TensorBoard / W&B when asked; only on rank 0."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        self.wb = None
        self._csv_fields: list[str] | None = None
        if not enabled:
            return
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - depends on the extra
                raise ImportError("tensorboard logging needs: pip install 'vidprobe[log]'") from e
            self.tb = SummaryWriter(str(run_dir / "tb"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError as e:  # pragma: no cover
                raise ImportError("W&B logging needs: pip install wandb") from e
            self.wb = wandb.init(project="vidprobe", name=cfg.name, config=cfg.to_dict())

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / "log.csv"
        if self._csv_fields is None:
            self._csv_fields = list(row.keys())
            if csv_path.exists() and csv_path.stat().st_size:
                with open(csv_path) as f:
                    header = next(csv.reader(f), None)
                if header:
                    self._csv_fields = header
        new_file = not csv_path.exists() or csv_path.stat().st_size == 0
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._csv_fields, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row.get("step", 0))
        if self.wb is not None:
            self.wb.log(row, step=row.get("step"))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    final_loss: float
    eval_loss: float | None
    model: Any = None  # the trained nn.Module (unwrapped; on its training device)


def _truncate_logs(run_dir: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint (they will be redone)."""
    jl = run_dir / "log.jsonl"
    if jl.exists():
        rows = [ln for ln in jl.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        _atomic_write_text(jl, "".join(r + "\n" for r in rows))
    cp = run_dir / "log.csv"
    if cp.exists():
        with open(cp) as f:
            rd = list(csv.reader(f))
        if rd:
            head, body = rd[0], rd[1:]
            si = head.index("step") if "step" in head else None
            keep = [r for r in body if si is None or int(float(r[si])) <= step]
            import io

            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(head)
            w.writerows(keep)
            _atomic_write_text(cp, buf.getvalue())


def evaluate_loss(model, ds: ProbeDataset, loss_fn, device, precision: str, batch_size: int) -> float:
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            batch = to_device(collate([ds.get(j, None) for j in range(i, min(len(ds), i + batch_size))]), device)
            with autocast_ctx(device, precision):
                pred = model(batch["features"])
            loss, _ = loss_fn(pred, batch["gt"])
            tot += float(loss) * batch["features"].shape[0]
            n += batch["features"].shape[0]
    model.train()
    return tot / max(1, n)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    """Train a probe. ``stop_after_steps`` ends the process's loop early (used to simulate a crash in tests)."""
    from vidprobe.probe.losses import LossConfig, LossConfigError, probe_loss

    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last = find_checkpoint(run_dir, "last") if resume else None
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").glob("step_*")):
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue, or choose another 'out'")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))

    store, dataset, layer, timestep = open_inputs(cfg)
    sampler = FrameSampler(**asdict(cfg.sampler))
    train_ids = dataset.videos(cfg.train_split)
    out_hw = cfg.out_hw or dataset_hw(dataset, train_ids[0])
    train_ds = ProbeDataset(store, layer, timestep, dataset, cfg.train_split, sampler, out_hw, seed=cfg.seed)
    eval_ds = None
    try:
        eval_ds = ProbeDataset(store, layer, timestep, dataset, cfg.eval_split, sampler, out_hw, seed=cfg.seed)
    except ValueError:
        eval_ds = None
    in_channels = train_ds.get(0, 0).features.shape[-1]
    model, pcfg = build_probe(cfg, in_channels, out_hw)
    model.to(device)
    try:
        loss_cfg = LossConfig.from_dict(dict(cfg.loss))
    except (LossConfigError, TypeError) as e:
        raise ConfigError(f"config field 'loss': {e}") from None

    def loss_fn(pred, gt):
        return probe_loss(pred, gt, tuple(out_hw), loss_cfg)

    opt = build_optimizer(model, cfg.optim)
    global_batch = cfg.batch_size * dist.world
    steps_per_epoch = steps_in_epoch(len(train_ds), global_batch, cfg.drop_last)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(total, cfg.optim, cfg.epochs))

    step = 0
    if last is not None:
        model.load_state_dict(load_file(str(last / "model.safetensors")))
        state = json.loads((last / "state.json").read_text())
        optimizer_from_tensors(opt, load_file(str(last / "optimizer.safetensors")), state["optimizer_meta"])
        sched.load_state_dict(state["scheduler"])
        rng = load_file(str(last / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["torch_cuda"])
        step = int(state["step"])
        if dist.main:
            _truncate_logs(run_dir, step)

    ddp_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    if dist.main:
        _atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        _atomic_write_text(
            run_dir / "run.json",
            json.dumps(
                {
                    "layer": layer,
                    "timestep": timestep,
                    "in_channels": in_channels,
                    "out_hw": list(out_hw),
                    "probe": asdict(pcfg) if hasattr(pcfg, "__dataclass_fields__") else str(pcfg),
                    "loss": loss_cfg.to_dict(),
                    "compat": cfg.compat,
                    "warmup_steps": warmup_steps(total, cfg.optim, cfg.epochs),
                    "train_videos": len(train_ds),
                    "eval_videos": len(eval_ds) if eval_ds else 0,
                    "steps_per_epoch": steps_per_epoch,
                    "total_steps": total,
                    "world_size": dist.world,
                },
                indent=1,
                default=str,
            ),
        )
    logger = RunLogger(run_dir, cfg, enabled=dist.main)
    bar = tqdm(total=total, initial=step, disable=not (progress and dist.main), desc=cfg.name, unit="step", dynamic_ncols=True)
    model.train()
    last_loss = float("nan")
    best_eval = None
    if last is not None:  # the best so far survives a restart
        prev_best = _read_pointer(run_dir / "checkpoints" / "best.json")
        best_eval = prev_best.get("eval_loss") if prev_best else None
    nonfinite = 0
    perm_cache: dict[int, list[int]] = {}
    end = total if stop_after_steps is None else min(total, step + stop_after_steps)
    t0 = time.time()
    while step < end:
        epoch = step // steps_per_epoch
        if epoch not in perm_cache:
            g = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
            perm_cache = {epoch: torch.randperm(len(train_ds), generator=g).tolist()}
        perm = perm_cache[epoch]
        k = step % steps_per_epoch
        gidx = [perm[(k * global_batch + j) % len(perm)] for j in range(global_batch)]
        local = gidx[dist.rank * cfg.batch_size : (dist.rank + 1) * cfg.batch_size]
        batch = to_device(collate([train_ds.get(i, epoch) for i in local]), device)
        with autocast_ctx(device, cfg.precision):
            pred = ddp_model(batch["features"])
        try:
            loss, terms = loss_fn(pred, batch["gt"])
        except Exception as e:
            if type(e).__name__ == "NonFiniteLossError":
                nonfinite += 1
                logger.log({"step": step, "event": "nonfinite_loss", "error": str(e), "videos": ",".join(batch["videos"])})
            raise
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        else:  # no clipping: the norm is still logged
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        opt.step()
        sched.step()
        step += 1
        last_loss = float(loss.detach())
        row = {"step": step, "epoch": epoch, "loss": last_loss, "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm), "time": round(time.time() - t0, 3)}
        row.update({f"loss_{k_}": float(v) for k_, v in terms.items()})
        logger.log(row)
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{row['lr']:.2e}")
        epoch_end = step % steps_per_epoch == 0
        epochs_done = step // steps_per_epoch
        want_ckpt = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
            epoch_end and cfg.checkpoint_epochs and epochs_done % cfg.checkpoint_epochs == 0
        ) or step == total
        want_eval = eval_ds is not None and (
            step == total or (epoch_end and cfg.eval_every_epochs and epochs_done % cfg.eval_every_epochs == 0)
        )
        if want_eval and dist.main:
            ev = evaluate_loss(model, eval_ds, loss_fn, device, cfg.precision, cfg.batch_size)
            logger.log({"step": step, "epoch": epoch, "eval_loss": ev})
            if best_eval is None or ev < best_eval:
                best_eval = ev
        if want_ckpt and dist.main:
            path = save_checkpoint(run_dir, model, opt, sched, step, epochs_done, cfg, cfg.keep_checkpoints)
            if want_eval:
                prev = _read_pointer(run_dir / "checkpoints" / "best.json")
                if prev is None or best_eval is not None and best_eval <= prev.get("eval_loss", float("inf")):
                    _atomic_write_text(run_dir / "checkpoints" / "best.json", json.dumps({"step": step, "path": path.name, "eval_loss": best_eval}))
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.barrier()
    bar.close()
    logger.close()
    result = TrainResult(
        run_dir=run_dir,
        steps=step,
        last_checkpoint=find_checkpoint(run_dir, "last"),
        best_checkpoint=find_checkpoint(run_dir, "best"),
        final_loss=last_loss,
        eval_loss=best_eval,
        model=model,
    )
    return result
