"""Compact ViT pieces shared by the own Fast3R and VGGT implementations.

Neither model is on PyPI (no installable ``vggt`` / ``fast3r`` package), so
vidprobe carries small implementations whose parameter names and shapes match
the official checkpoints (see ``tests/fixtures/*_keys.json``). This module
holds what both use:

* :class:`RoPE2D` -- 2D rotary embedding: the head dimension is split in two
  halves, the first rotated by the token's row (y), the second by its column
  (x); each half uses ``inv_freq = base^(-2i/d)`` with the angles concatenated
  twice and the "rotate half" convention. Same rule in CroCo/Fast3R and VGGT.
* :class:`Attention`, :class:`Mlp`, :class:`LayerScale`, :class:`Block` -- the
  pre-norm timm/DINOv2-style block (``norm1, attn.qkv, attn.q_norm,
  attn.k_norm, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma``).
* :func:`grid_positions` -- (y, x) integer positions of a token grid.
* :func:`load_state_dict_file` / :func:`load_into` -- read a checkpoint
  (safetensors, or ``torch.load(weights_only=True)``) from a local path or a
  hub id, drop documented unused prefixes, load strictly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RoPE2D(nn.Module):
    """2D RoPE on ``tokens [B, heads, N, d]`` with ``positions [B, N, 2]`` (y, x)."""

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = float(base)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, dim: int, n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, n, str(device), dtype)
        if key not in self._cache:
            inv = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            ang = torch.outer(torch.arange(n, device=device, dtype=inv.dtype), inv).to(dtype)
            ang = torch.cat([ang, ang], dim=-1)
            self._cache[key] = (ang.cos(), ang.sin())
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return torch.cat([-b, a], dim=-1)

    def _rope1d(self, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = F.embedding(pos, cos)[:, None]
        s = F.embedding(pos, sin)[:, None]
        return x * c + self._rotate_half(x) * s

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] % 4:
            raise ValueError(f"RoPE2D: head dim {tokens.shape[-1]} must be a multiple of 4")
        half = tokens.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, tokens.device, tokens.dtype)
        y, x = tokens.chunk(2, dim=-1)
        return torch.cat([self._rope1d(y, positions[..., 0], cos, sin), self._rope1d(x, positions[..., 1], cos, sin)], -1)


def grid_positions(batch: int, h: int, w: int, device=None) -> torch.Tensor:
    """``[batch, h*w, 2]`` long (row, column) of a row-major token grid."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)
    return pos[None].expand(batch, -1, -1).clone()


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention; optional per-head LayerNorm on q and k (QK-norm) and 2D RoPE."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1 x))``, then ``x + ls2(mlp(norm2 x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        norm_eps: float = 1e-5,
        init_values: float | None = None,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
        attn_scale: float | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm, rope, attn_scale)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ----------------------------------------------------------------- checkpoints
CHECKPOINT_FILES = ("model.safetensors", "model.pt", "pytorch_model.bin")


def resolve_checkpoint(model_id: str | os.PathLike, revision: str | None = None,
                       filenames: Sequence[str] = CHECKPOINT_FILES) -> Path:
    """A checkpoint file: ``model_id`` is a file, a directory holding one of ``filenames``, or a hub id."""
    p = Path(model_id)
    if p.is_file():
        return p
    if p.is_dir():
        for name in filenames:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: no checkpoint file found (looked for {', '.join(filenames)})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise FileNotFoundError(f"{model_id}: not a local path and huggingface_hub is not installed") from e
    errors = []
    for name in filenames:
        try:
            return Path(hf_hub_download(str(model_id), name, revision=revision))
        except Exception as e:  # noqa: BLE001 - try the next file name
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise FileNotFoundError(f"{model_id}: could not fetch a checkpoint from the hub:\n  " + "\n  ".join(errors))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch file via ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def load_into(model: nn.Module, state: dict[str, torch.Tensor], drop_prefixes: Iterable[str] = (),
              where: str = "checkpoint") -> list[str]:
    """Load ``state`` strictly after dropping keys under ``drop_prefixes``; returns the dropped keys.

    Raises a ValueError naming missing/unexpected keys and shape mismatches.
    """
    drop = tuple(drop_prefixes)
    dropped = [k for k in state if drop and k.startswith(drop)]
    kept = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    own = model.state_dict()
    missing = sorted(set(own) - set(kept))
    unexpected = sorted(set(kept) - set(own))
    bad = sorted(k for k in set(own) & set(kept) if tuple(own[k].shape) != tuple(kept[k].shape))
    if missing or unexpected or bad:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)} keys, e.g. {missing[:5]}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)} keys, e.g. {unexpected[:5]}")
        if bad:
            lines.append("shape mismatch: " + ", ".join(f"{k} {tuple(kept[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:5]))
        raise ValueError(f"{where}: does not match {type(model).__name__}: " + "; ".join(lines))
    model.load_state_dict(kept, strict=True)
    return dropped


def param_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{name: shape}`` of the persistent state (what a checkpoint holds)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
