"""`vidprobe plan CONFIG`: what a sweep will cost before it runs -- disk, passes, steps, accelerator memory.

For each backbone entry of a sweep config (the file ``vidprobe sweep`` takes) and for the whole sweep:

* **store size** per codec: a feature file holds ``[N, h, w, C]`` maps per (video, layer, timestep) (the grid
  of one traced pass, :mod:`vidprobe.pipeline.plan_meta`), plus its ``frame_index`` (8 bytes a frame) and a
  header (:data:`FILE_OVERHEAD`). Codecs (:mod:`vidprobe.features.codec` implements them; the sizes here come
  from the shapes alone): ``fp16`` / ``bf16`` 2 bytes a value, ``fp32`` 4; ``int8`` 1 byte a value plus a float32
  scale and offset per channel and file; ``pca:K`` K channels in the store dtype plus one float32 basis
  (``C x K`` components and a ``C`` mean) per (layer, timestep); ``pca:K+int8`` both.
* **passes**: one hooked pass per (video, clip, timestep), stopped after the deepest requested block (diffusion
  models: a denoiser forward each; Aether's reconstruction adds its full-depth steps per clip; a per-frame entry
  feeds every frame alone), and the VAE once per clip.
* **training steps** per cell: ``steps_in_epoch(train videos, batch_size, drop_last) x epochs``, capped by
  ``max_steps`` (the loop's own rule).
* **peak accelerator memory**: extraction = parameters + the peak of the activations of the VAE encoding and of
  the hooked pass, with and without ``offload`` (the VAE then visits the device only while encoding; the
  denoiser stays); training = parameters + gradients + AdamW state + the peak of one step (batch, activations
  at the configured batch, frames, token grid, output size, gradient checkpointing and precision, new
  gradients, optimizer temporaries). The model: :mod:`vidprobe.pipeline.plan_memory`.

:func:`preflight` is the check ``vidprobe sweep`` runs first: the free space on the store's disk and the memory of
the device, against the plan; what does not fit is refused with the numbers (``--no-plan-check`` overrides).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PCA_K", "EntryPlan", "Preflight", "SweepPlan", "TrainPlan", "codec_bytes", "device_free",
           "disk_free", "plan_sweep", "preflight"]

DEFAULT_PCA_K = 256
FILE_OVERHEAD = 1024  # bytes of a feature file's header (tensor table + metadata; an upper bound)
DEFAULT_FRAMES = 81  # frames fed when neither the entry nor a readable dataset says (the protocol's window)
DEFAULT_OUT_HW = (294, 518)  # the probe's output size when neither train.out_hw nor a readable dataset says
ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}


def codec_bytes(grid: tuple[int, int, int, int], frames: int, dtype: str = "fp16", codecs: list[str] | None = None,
                pca_k: int = DEFAULT_PCA_K) -> dict[str, tuple[int, int]]:
    """``{codec: (bytes of one feature file, bytes once per (layer, timestep) key)}`` of maps ``grid``.

    ``dtype``: the store dtype (what ``pca:K`` coefficients are kept in); ``codecs``: the ones to size (default:
    the store dtype, fp16, int8, pca:K, pca:K+int8).
    """
    n, h, w, c = grid
    k = min(int(pca_k), c)
    values = n * h * w
    file_extra = 8 * frames + FILE_OVERHEAD
    out: dict[str, tuple[int, int]] = {}
    for name in codecs or list(dict.fromkeys([dtype, "fp16", "int8", f"pca:{k}", f"pca:{k}+int8"])):
        if name in ITEMSIZE:
            out[name] = (values * c * ITEMSIZE[name] + file_extra, 0)
        elif name == "int8":
            out[name] = (values * c + 8 * c + file_extra, 0)
        elif name.startswith("pca:"):
            kk = min(int(name.split(":")[1].split("+")[0]), c)
            quant = name.endswith("+int8")
            payload = values * kk + 8 * kk if quant else values * kk * ITEMSIZE.get(dtype, 2)
            out[name] = (payload + file_extra, 4 * (c * kk + c))
        else:
            raise ValueError(f"codec {name!r}: the planner sizes {', '.join(ITEMSIZE)}, int8, pca:K, pca:K+int8")
    return out


@dataclass
class TrainPlan:
    """The probe training of one cell."""

    cell: str
    steps: int
    batch: int
    frames: int
    out_hw: tuple[int, int]
    precision: str  # bf16 (autocast) or fp32
    grad_checkpointing: bool
    memory: Any = None  # plan_memory.TrainMemory, or None when not traced
    checkpoints_bytes: int = 0  # the run's checkpoints on disk (kept ones + best)
    run_dir: str = ""


@dataclass
class EntryPlan:
    """One backbone entry of the grid: one extraction, its cells."""

    label: str
    name: str
    features_key: str
    kwargs: dict
    per_frame: bool
    frames: int  # frames fed per video
    layers: tuple
    timesteps: tuple
    videos: int | None
    grid: tuple[int, int, int, int] | None = None  # [N, h, w, C] per video and key
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # codec -> (per file, per key)
    passes_per_video: int = 0  # hooked passes (denoiser forwards for diffusion models)
    vae_per_video: int = 0
    deepest: int = 0
    num_layers: int = 0
    params: int = 0
    param_bytes: int = 0
    extract_peak: int | None = None
    extract_peak_offload: int | None = None
    offload: bool = False  # configured
    diffusion: bool = False
    training: list[TrainPlan] = field(default_factory=list)
    error: str | None = None  # why nothing was traced

    @property
    def keys(self) -> int:
        return len(self.layers) * len(self.timesteps)

    def store_bytes(self, codec: str) -> int | None:
        if self.videos is None or codec not in self.sizes:
            return None
        per_file, per_key = self.sizes[codec]
        return self.keys * (self.videos * per_file + per_key)

    @property
    def train_steps(self) -> int:
        return sum(t.steps for t in self.training)

    @property
    def train_peak(self) -> int | None:
        peaks = [t.memory.total for t in self.training if t.memory is not None]
        return max(peaks) if peaks else None


@dataclass
class SweepPlan:
    config: str
    out: str
    device: str
    dtype: str  # the store dtype of the sweep's extraction
    codecs: list[str]
    entries: list[EntryPlan]
    videos: int | None
    train_videos: int | None
    notes: list[str] = field(default_factory=list)

    def store_bytes(self, codec: str) -> int | None:
        vals = [e.store_bytes(codec) for e in self.entries if e.grid is not None]
        return None if not vals or any(v is None for v in vals) else sum(vals)

    @property
    def cells(self) -> int:
        return sum(len(e.training) for e in self.entries)

    @property
    def train_steps(self) -> int:
        return sum(e.train_steps for e in self.entries)

    @property
    def checkpoints_bytes(self) -> int:
        return sum(t.checkpoints_bytes for e in self.entries for t in e.training)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        for e, ed in zip(self.entries, d["entries"]):
            ed["store_bytes"] = {c: e.store_bytes(c) for c in e.sizes}
            ed["train_steps"], ed["train_peak"] = e.train_steps, e.train_peak
            for t, td in zip(e.training, ed["training"]):
                td["memory"] = None if t.memory is None else {**asdict(t.memory), "total": t.memory.total}
        d["store_bytes"] = {c: self.store_bytes(c) for c in self.codecs}
        d["cells"], d["train_steps"], d["checkpoints_bytes"] = self.cells, self.train_steps, self.checkpoints_bytes
        return d


# ------------------------------------------------------------------------------------------ the facts
@dataclass
class _Data:
    videos: int | None = None
    train: int | None = None
    frames: int | None = None
    hw: tuple[int, int] | None = None


def _dataset_facts(cfg: dict, videos: int | None, notes: list[str]) -> _Data:
    """Video counts, frames and frame size of the sweep's dataset; ``videos`` (the CLI's) when it cannot be read."""
    from vidprobe.data.base import split_videos

    d = _Data()
    try:
        from vidprobe.data.open import open_dataset

        ds = open_dataset(cfg["dataset"])
        ids = sorted(ds.videos())
        d.videos, d.train = len(ids), len(ds.videos("train"))
        if ids:
            d.frames = int(ds.num_frames(ids[0]))
            d.hw = tuple(ds.load_images(ids[0], [0]).shape[-2:])
    except Exception as e:  # noqa: BLE001 - a planner on a machine without the data still plans
        if videos is None:
            notes.append(f"dataset {cfg['dataset']} not readable here ({type(e).__name__}); totals need --videos N")
    if videos is not None:
        d.videos = int(videos)
        d.train = len(split_videos([str(i) for i in range(d.videos)])["train"])
    cap = (cfg.get("extract") or {}).get("max_videos")
    if cap is not None and d.videos is not None:
        d.videos = min(d.videos, int(cap))
    return d


# ------------------------------------------------------------------------------------------ the plan
def plan_sweep(cfg: dict, *, config: str = "", device: str = "cuda", videos: int | None = None,
               pca_k: int = DEFAULT_PCA_K, memory: bool = True, codecs: list[str] | None = None) -> SweepPlan:
    """The plan of a checked sweep config (see the module docstring) for a run on ``device`` (``cuda`` / ``cpu``).

    ``videos``: the dataset's video count when it is not readable here; ``memory=False``: sizes, passes and steps
    only (a quick trace of the shapes; no memory numbers).
    """
    from vidprobe.pipeline.sweep import backbone_entries, cell_train_config, plan_cells

    notes: list[str] = []
    data = _dataset_facts(cfg, videos, notes)
    dtype = str((cfg.get("extract") or {}).get("dtype", "fp16"))
    k = int(pca_k)
    codec_list = codecs or list(dict.fromkeys([dtype, "fp16", "int8", f"pca:{k}", f"pca:{k}+int8"]))
    cells = plan_cells(cfg)
    entries = []
    for e in backbone_entries(cfg):
        ep = _entry_plan(e, data, dtype, codec_list, k, device, notes, memory)
        for c in (c for c in cells if c.entry.features_key == e.features_key):
            tc, _ = cell_train_config(cfg, c)
            ep.training.append(_train_plan(c.name, tc, ep, data, device, memory and ep.grid is not None))
            ep.training[-1].run_dir = str(tc.out)
        entries.append(ep)
    return SweepPlan(config=config, out=str(cfg["out"]), device=device, dtype=dtype, codecs=codec_list,
                     entries=entries, videos=data.videos, train_videos=data.train, notes=notes)


def _entry_plan(e, data: _Data, dtype: str, codecs: list[str], k: int, device: str, notes: list[str],
                memory: bool = True) -> EntryPlan:
    from vidprobe.pipeline.plan_meta import PlanUnsupported, trace_extraction

    frames = e.num_frames or data.frames or DEFAULT_FRAMES
    if e.num_frames is None and data.frames is None:
        notes.append(f"{e.label}: feeds every frame of a video; {DEFAULT_FRAMES} assumed (no readable dataset)")
    if data.frames is not None:
        frames = min(frames, data.frames)
    ep = EntryPlan(e.label, e.name, e.features_key, dict(e.kwargs), e.per_frame, frames, e.layers, e.timesteps,
                   data.videos, offload=bool(e.kwargs.get("offload")))
    fed = 1 if e.per_frame else frames
    try:
        tr = trace_extraction(e.name, e.kwargs, fed, e.layers, e.timesteps, native_hw=data.hw, device=device,
                              memory=memory)
    except (PlanUnsupported, ImportError) as ex:
        ep.error = str(ex)
        return ep
    mult = frames if e.per_frame else 1
    n, h, w, c = tr.grid
    ep.grid = (n * mult, h, w, c)
    ep.sizes = codec_bytes(ep.grid, frames, dtype, codecs, k)
    recon = int(e.kwargs.get("recon_steps", 4)) if e.kwargs.get("geometry") == "reconstruct" else 0
    ep.passes_per_video = mult * tr.clips * (len(e.timesteps) + recon)
    ep.vae_per_video = mult * tr.clips if tr.diffusion else 0
    ep.deepest = max(tr.num_layers if lay == -1 else lay for lay in e.layers)
    ep.num_layers, ep.params, ep.param_bytes, ep.diffusion = tr.num_layers, tr.param_count, tr.param_bytes, tr.diffusion
    if memory:
        ep.extract_peak, ep.extract_peak_offload = tr.peak(False), tr.peak(True)
    return ep


def _train_plan(cell: str, tc, ep: EntryPlan, data: _Data, device: str, trace: bool) -> TrainPlan:
    from vidprobe.probe.schedule import steps_in_epoch

    train = data.train if data.train is not None else None
    steps = 0
    if train:
        per_epoch = steps_in_epoch(train, tc.batch_size, tc.drop_last) if train >= tc.batch_size or not tc.drop_last \
            else 0
        steps = per_epoch * tc.epochs
        if tc.max_steps:
            steps = min(steps, tc.max_steps)
    elif tc.max_steps:
        steps = tc.max_steps
    out_hw = tuple(tc.out_hw or data.hw or DEFAULT_OUT_HW)
    run_on = "cpu" if tc.device == "cpu" else device
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and run_on == "cuda")
    tp = TrainPlan(cell, steps, tc.batch_size, tc.sampler.num_frames, out_hw, "bf16" if bf16 else "fp32",
                   bool(tc.grad_checkpointing))
    if trace:
        tp.memory = train_memory(tc, ep.grid, out_hw, run_on, bf16)
        per_epoch = steps_in_epoch(train or 1, tc.batch_size, False)
        saves = math.ceil(steps / max(1, per_epoch * max(1, tc.checkpoint_epochs)))  # epoch ends (and the last step)
        if tc.checkpoint_every:
            saves += steps // tc.checkpoint_every
        kept = min(saves, tc.keep_checkpoints + 1) if tc.keep_checkpoints > 0 else saves  # + the best one
        tp.checkpoints_bytes = max(1, kept) * (tp.memory.params + tp.memory.optimizer)
    return tp


_TRAIN_CACHE: dict[str, Any] = {}


def train_memory(tc, grid, out_hw, device: str, bf16: bool):
    """Peak memory of one training step of ``tc``'s probe on features of ``grid`` (:func:`probe_train_memory`)."""
    import json

    import torch

    from vidprobe.pipeline.plan_memory import cpu_workspace, probe_train_memory
    from vidprobe.probe.losses import probe_loss
    from vidprobe.probe.model import Probe
    from vidprobe.probe.schedule import build_optimizer

    _, h, w, c = grid
    H, W = out_hw
    B, S = tc.batch_size, tc.sampler.num_frames
    pcfg = tc.probe_config(c, out_hw)
    pcfg.grad_checkpointing = bool(tc.grad_checkpointing)
    key = json.dumps([pcfg.to_dict(), B, S, h, w, device, bf16, tc.optim.grad_clip, tc.loss_config().to_dict()],
                     sort_keys=True, default=str)
    if key in _TRAIN_CACHE:
        return _TRAIN_CACHE[key]
    lcfg = tc.loss_config()

    def batch(dev):
        e = lambda *s, dt=torch.float32: torch.empty(*s, device=dev, dtype=dt)  # noqa: E731
        feats = e(B, S, h, w, c, dt=torch.float16).float()  # the store's dtype on the device, then fp32 (to_device)
        gt = {"points": e(B, S, H, W, 3), "depth": e(B, S, H, W), "valid": e(B, S, H, W, dt=torch.bool),
              "confidence": e(B, S, H, W), "extrinsics": e(B, S, 3, 4), "intrinsics": e(B, S, 3, 3),
              "images": e(B, S, 3, H, W)}
        return feats, gt

    mem = probe_train_memory(
        lambda: Probe(pcfg), lambda m: build_optimizer(m, tc.optim), batch,
        lambda pred, gt: probe_loss(pred, gt, (H, W), lcfg)[0], autocast=torch.bfloat16 if bf16 else None,
        foreach=device == "cuda", grad_clip=float(tc.optim.grad_clip or 0.0),
        autocast_modules=lambda m: [m.input_norm, m.input_proj, *m.frame_blocks, *m.global_blocks],
        workspace=cpu_workspace if device == "cpu" else None)
    _TRAIN_CACHE[key] = mem
    return mem


# ------------------------------------------------------------------------------------------ the preflight
def disk_free(path: str | Path) -> tuple[Path, int]:
    """(the nearest existing folder of ``path``, its disk's free bytes)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p, int(shutil.disk_usage(p).free)


def device_free(device: str) -> tuple[str, int | None]:
    """(what, free bytes) of ``device``: CUDA's free memory (``torch.cuda.mem_get_info``), or the CPU's available
    RAM (``MemAvailable`` of /proc/meminfo; None where there is none)."""
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}", int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return "cpu (available RAM)", int(line.split()[1]) * 1024
    except OSError:
        pass
    return "cpu", None


def _present_bytes(root: Path) -> int:
    total = 0
    if root.exists():
        for dirpath, _, files in os.walk(root):
            for f in files:
                try:
                    total += (Path(dirpath) / f).stat().st_size
                except OSError:
                    pass
    return total


@dataclass
class Preflight:
    plan: SweepPlan
    problems: list[str]
    needed_disk: int
    free_disk: int
    disk_root: str
    device: str
    free_device: int | None


def human(n: int | float | None) -> str:
    """Bytes as ``12.3 GiB``."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def preflight(cfg: dict, *, config: str = "", device: str | None = None, plan: SweepPlan | None = None) -> Preflight:
    """The plan and what does not fit: the store's disk (features still to write + checkpoints) and, per backbone,
    the extraction and the training peaks against the device's free memory, naming the option that would fit."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = plan or plan_sweep(cfg, config=config, device=device)
    out = Path(cfg["out"])
    codec = str((cfg.get("extract") or {}).get("codec") or plan.dtype)
    need_feats = 0
    for e in plan.entries:
        total = e.store_bytes(codec) if codec in e.sizes else e.store_bytes(plan.dtype)
        if total is not None:
            need_feats += max(0, total - _present_bytes(out / "features" / e.features_key))
    need_ckpt = sum(max(0, t.checkpoints_bytes - _present_bytes(Path(t.run_dir) / "checkpoints"))
                    for e in plan.entries for t in e.training)
    need = need_feats + need_ckpt
    root, free = disk_free(out)
    problems = []
    if need > free:
        problems.append(f"disk: the sweep writes {human(need)} under {out} (features {human(need_feats)} in {codec}, "
                        f"checkpoints {human(need_ckpt)}), the disk of {root} has {human(free)} free")
    what, avail = device_free(device)
    if avail is not None:
        for e in plan.entries:
            problems += _memory_problems(e, what, avail)
    return Preflight(plan, problems, need, free, str(root), what, avail)


def _memory_problems(e: EntryPlan, what: str, avail: int) -> list[str]:
    out = []
    if e.extract_peak is not None:
        peak = e.extract_peak_offload if e.offload else e.extract_peak
        if peak > avail:
            fix = ""
            if not e.offload and e.extract_peak_offload is not None and e.extract_peak_offload <= avail:
                fix = f"; with kwargs offload: true it needs {human(e.extract_peak_offload)}"
            out.append(f"{what}: extracting {e.label} needs {human(peak)} (parameters {human(e.param_bytes)}), "
                       f"{human(avail)} free{fix}")
    peak = e.train_peak
    if peak is not None and peak > avail:
        t = max((t for t in e.training if t.memory is not None), key=lambda t: t.memory.total)
        fix = "" if t.grad_checkpointing else "; try train.grad_checkpointing: true"
        out.append(f"{what}: training a probe on {e.label} (batch {t.batch} x {t.frames} frames, out {t.out_hw[0]}x"
                   f"{t.out_hw[1]}, {t.precision}) needs {human(peak)}, {human(avail)} free{fix}")
    return out
