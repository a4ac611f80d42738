"""Checkpoints of a run: ``checkpoints/step_XXXXXXX/`` (safetensors weights, optimiser and RNG state,
``state.json``) and the ``last.json`` / ``best.json`` pointers; nothing is pickled.

A checkpoint is written into a temporary folder and renamed into place, so a crash never leaves a half
one; older checkpoints beyond ``keep`` are pruned (never the best).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vidprobe.atomic import atomic_write_text, current_umask
from vidprobe.probe.train_config import TrainConfig

__all__ = ["CheckpointError", "find_checkpoint", "load_tensors", "optimizer_from_tensors", "optimizer_to_tensors", "read_pointer", "restore_checkpoint",
           "save_checkpoint", "update_best"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, missing a key); the message names the file."""


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or :class:`CheckpointError` naming the file (never a raw traceback)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type (or OSError) for a bad file
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint file ({type(e).__name__}: {e}); delete this "
                              "checkpoint folder to resume from an earlier one, or start the run again") from None


def _load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint state ({e})") from None
    missing = [k for k in ("step", "scheduler", "optimizer_meta") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint state lacks {', '.join(missing)}")
    return state


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser state as ``{"<param id>.<name>": tensor}`` plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"{pid}.{k}"] = t.detach().cpu().contiguous()
    groups = sd["param_groups"]
    return tensors, {"param_groups": json.loads(json.dumps(groups, default=list))}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of :func:`optimizer_to_tensors`: load the state into ``opt``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    # a parameter that changed shape but not size (the camera head's empty pose, [9] -> [1, 1, 9], when the probe
    # took VGGT's names): its moments are reshaped, so runs checkpointed before still resume
    for p, st in opt.state.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() and v.numel() == p.numel() and v.shape != p.shape:
                st[k] = v.reshape(p.shape)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, opt, sched, step: int, epoch_done: int, cfg: TrainConfig, keep: int) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically, point ``last.json`` at it and prune; returns its path."""
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
        mode = 0o666 & ~current_umask()
        for f in tmp.iterdir():  # safetensors writes its files 0600: give them the umask's mode, like atomic writes
            os.chmod(f, mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. disk full: leave nothing behind
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ck_root / "last.json", json.dumps({"step": step, "path": final.name}))
    # prune old ones (never the best)
    best = read_pointer(ck_root / "best.json")
    olds = sorted(p for p in ck_root.glob("step_*") if p.is_dir())
    for p in olds[:-keep] if keep > 0 else []:
        if best is None or p.name != best.get("path"):
            shutil.rmtree(p, ignore_errors=True)
    return final


def restore_checkpoint(ckpt: Path, model: torch.nn.Module, opt, sched) -> int:
    """Load weights, optimiser, scheduler and RNG state of ``ckpt`` (exact resume); returns its step."""
    weights = load_tensors(ckpt / "model.safetensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt / 'model.safetensors'}: does not match the probe of this config ({e})") from None
    state = _load_state(ckpt / "state.json")
    optimizer_from_tensors(opt, load_tensors(ckpt / "optimizer.safetensors"), state["optimizer_meta"])
    sched.load_state_dict(state["scheduler"])
    rng = load_tensors(ckpt / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    return int(state["step"])


def read_pointer(path: Path) -> dict | None:
    """A ``last.json`` / ``best.json`` pointer, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def update_best(run_dir: Path, step: int, path: Path, eval_loss: float | None) -> None:
    """Point ``best.json`` at ``path`` unless an earlier checkpoint had a lower eval loss."""
    best_json = run_dir / "checkpoints" / "best.json"
    prev = read_pointer(best_json)
    if prev is None or eval_loss is not None and eval_loss <= prev.get("eval_loss", float("inf")):
        atomic_write_text(best_json, json.dumps({"step": step, "path": path.name, "eval_loss": eval_loss}))


def find_checkpoint(run_dir: Path, which: str = "last") -> Path | None:
    """The checkpoint folder ``which`` (``last`` | ``best``) points at, or None."""
    ptr = read_pointer(Path(run_dir) / "checkpoints" / f"{which}.json")
    if ptr is None:
        return None
    p = Path(run_dir) / "checkpoints" / ptr["path"]
    return p if (p / "model.safetensors").exists() else None
