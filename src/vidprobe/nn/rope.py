"""Rotary position embeddings (RoPE) and token-grid positions.

A rotation pair ``(a, b)`` at angle ``t`` becomes ``(a cos t - b sin t,
b cos t + a sin t)``: :func:`apply_rope` computes ``x cos + rotate_half(x)
sin`` with ``rotate_half([a, b]) = [-b, a]`` applied within each of
``chunks`` equal parts of the last dimension, so channel ``i`` of a part is
paired with channel ``i + part/2``. Angular frequencies are
``base ** (-2i / dim)``, ``i < dim/2`` (:func:`rope_frequencies`).

Two layouts:

- :class:`RoPE2D` (VGGT, CroCo / Fast3R, the probe): the head dimension ``D``
  is split in two halves, the first rotated by the row (y), the second by the
  column (x); each half is one part (``chunks=2``) with ``dim = D/2``.
  Tables ``[.., N, D]`` are ``[a_y, a_y, a_x, a_x]`` with ``a = pos * freq``.
- :func:`axial_rope_tables` (Open-Sora 2.0, Liger's rotate-half kernel): the
  per-axis angles of all axes are concatenated and repeated twice, one part
  over the whole head dimension (``chunks=1``); applied in fp32.

Numerics of :class:`RoPE2D`, two settings of the same rule (they differ in
the last bits; ``tests/test_nn.py``): by default as VGGT / CroCo compute it
(``tests/test_parity_vggt.py``, ``tests/test_parity_fast3r.py``), frequencies
in float32 on the tokens' device and the angles rounded to the tokens' dtype
before cos / sin; the probe's (``exact_freqs=True, fp32_tables=True``),
frequencies in float64 on the CPU rounded to float32 and cos / sin kept in
float32, cast to the tokens' dtype when applied. The angles are computed from
the positions directly (no lookup table sized by ``positions.max()``), so the
module also runs on the ``meta`` device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def rope_frequencies(dim: int, base: float, exact: bool = False, device=None) -> torch.Tensor:
    """``[dim // 2]`` float32 frequencies ``base ** (-2i / dim)``.

    ``exact``: computed in float64 on the CPU and rounded to float32 (then
    moved to ``device``); otherwise ``1 / base ** (2i / dim)`` in float32 on
    ``device`` (upstream VGGT / CroCo / Open-Sora). The two differ in the last
    bit for most sizes.
    """
    if exact:
        quarter = dim // 2
        freqs = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        return freqs.float().to(device)
    return 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))


def rotate_half(x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
    """Within each of ``chunks`` equal parts of the last dim, map ``[a, b]`` -> ``[-b, a]``."""
    parts = []
    for part in x.chunk(chunks, dim=-1):
        a, b = part.chunk(2, dim=-1)
        parts += [-b, a]
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, chunks: int = 2,
               fp32: bool = False) -> torch.Tensor:
    """``x cos + rotate_half(x, chunks) sin`` for ``x [..., N, D]`` and tables broadcastable to it.

    The tables are cast to ``x``'s dtype; with ``fp32`` the rotation is
    computed in float32 instead and the result cast back to ``x``'s dtype.
    """
    if fp32:
        xf = x.float()
        return (xf * cos + rotate_half(xf, chunks) * sin).to(x.dtype)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x, chunks) * sin


class RoPE2D(nn.Module):
    """2D RoPE on (row, column) positions; holds no parameters.

    ``forward(x [B, heads, N, D], positions [N, 2] or [B, N, 2])`` rotates
    ``x``. ``head_dim`` (optional) fixes ``D`` for :meth:`tables` called
    without one; ``exact_freqs`` / ``fp32_tables``: the numerics (module
    docstring).
    """

    def __init__(self, base: float = 100.0, head_dim: int | None = None, *, exact_freqs: bool = False,
                 fp32_tables: bool = False):
        super().__init__()
        if head_dim is not None and head_dim % 4:
            raise ValueError(f"RoPE2D: head_dim must be divisible by 4, got {head_dim}")
        self.base = float(base)
        self.head_dim = head_dim
        self.exact_freqs = exact_freqs
        self.fp32_tables = fp32_tables
        self._freqs: dict[tuple[int, str], torch.Tensor] = {}

    def frequencies(self, half: int, device) -> torch.Tensor:
        """``[half // 2]`` frequencies of one half (cached per size and device)."""
        key = (half, str(device))
        if key not in self._freqs:
            self._freqs[key] = rope_frequencies(half, self.base, self.exact_freqs, device)
        return self._freqs[key]

    def tables(self, positions: torch.Tensor, head_dim: int | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [..., N, 2]`` (y, x) -> ``(cos, sin)``, each ``[..., N, head_dim]``.

        In float32 with ``fp32_tables``, else in ``dtype`` (the angles rounded
        to it before cos / sin).
        """
        D = head_dim if head_dim is not None else self.head_dim
        if D is None or D % 4:
            raise ValueError(f"RoPE2D: head dim {D} must be a multiple of 4")
        freqs = self.frequencies(D // 2, positions.device)
        pos = positions.to(torch.float32)
        ang_y, ang_x = pos[..., 0:1] * freqs, pos[..., 1:2] * freqs  # [..., N, D/4]
        if not self.fp32_tables:
            ang_y, ang_x = ang_y.to(dtype), ang_x.to(dtype)
        cy, sy, cx, sx = ang_y.cos(), ang_y.sin(), ang_x.cos(), ang_x.sin()
        return torch.cat([cy, cy, cx, cx], dim=-1), torch.cat([sy, sy, sx, sx], dim=-1)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.head_dim is not None and x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE2D: built for head dim {self.head_dim}, got {x.shape[-1]}")
        cos, sin = self.tables(positions, x.shape[-1], x.dtype)
        if positions.dim() == 3:  # [B, N, D] -> [B, 1, N, D]: broadcast over the heads
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return apply_rope(x, cos, sin, chunks=2)


def grid_positions(h: int, w: int, num_special: int = 0, offset: int = 0, device=None) -> torch.Tensor:
    """``[num_special + h*w, 2]`` long (row, column) positions of a row-major token grid.

    Special tokens (camera, registers) first, at ``(0, 0)``; patch ``(r, c)``
    at ``(r + offset, c + offset)``. VGGT and the probe use ``offset=1``, so
    special tokens are not rotated at all; CroCo / Fast3R use ``offset=0``
    and no special tokens.
    """
    rows = torch.arange(h, device=device).repeat_interleave(w) + offset
    cols = torch.arange(w, device=device).repeat(h) + offset
    patch = torch.stack([rows, cols], dim=-1)
    special = torch.zeros(num_special, 2, dtype=patch.dtype, device=device)
    return torch.cat([special, patch], dim=0)


def axial_rope_tables(ids: torch.Tensor, axes_dim: Sequence[int], theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, L, n_axes]`` -> rotate-half ``cos, sin [B, 1, L, D]`` in float32, ``D = sum(axes_dim)``.

    Axis ``i`` contributes ``ids[..., i] * rope_frequencies(axes_dim[i],
    theta)``; the angles of all axes are concatenated and repeated twice
    (apply with ``apply_rope(x, cos, sin, chunks=1, fp32=True)``).
    """
    angles = [ids[..., i].float()[..., None] * rope_frequencies(d, theta, device=ids.device)
              for i, d in enumerate(axes_dim)]
    a = torch.cat(angles, dim=-1)  # [B, L, D/2]
    cos, sin = a.cos().repeat(1, 1, 2), a.sin().repeat(1, 1, 2)
    return cos[:, None], sin[:, None]
