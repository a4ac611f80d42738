"""The probe's transformer parts: :mod:`vidprobe.nn`'s ViT block with the probe's 2D RoPE numerics.

- :class:`RoPE2D`: :class:`vidprobe.nn.rope.RoPE2D` as the probe computes it
  (frequencies ``base ** (-i / (D/4))`` in float64 rounded to float32,
  cos / sin tables in float32, cast to the tokens' dtype when applied). The
  head dimension ``D`` is split in two halves; the first half is rotated by
  the row (y) position, the second by the column (x) position; inside each
  half the channels ``i`` and ``i + D/4`` form a rotation pair, base 100 by
  default.
- :func:`grid_positions`: patch tokens at ``(row + 1, col + 1)``; special
  tokens (camera, registers) at ``(0, 0)``, i.e. a rotation by angle 0: they
  are not rotated at all and their scores with a patch depend only on the
  patch's own position.
- :func:`apply_rope`: rotate ``x [..., N, D]`` by the tables ``cos, sin [N, D]``.
- ``Attention``, ``LayerScale``, ``Mlp``, ``Block``: :mod:`vidprobe.nn.vit`.
"""

from __future__ import annotations

import torch

from vidprobe.nn import rope as _rope
from vidprobe.nn.vit import Attention, Block, LayerScale, Mlp

__all__ = ["Attention", "Block", "LayerScale", "Mlp", "RoPE2D", "apply_rope", "grid_positions"]


class RoPE2D(_rope.RoPE2D):
    """The probe's 2D RoPE for head dimension ``head_dim`` (see the module docstring)."""

    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__(base, head_dim=head_dim, exact_freqs=True, fp32_tables=True)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., N, D]`` by the tables ``cos, sin [N, D]`` of :meth:`RoPE2D.tables`."""
    return _rope.apply_rope(x, cos, sin, chunks=2)


def grid_positions(h: int, w: int, num_special: int, device=None) -> torch.Tensor:
    """Positions ``[num_special + h*w, 2]``: specials at (0, 0), patch (r, c) at (r+1, c+1)."""
    return _rope.grid_positions(h, w, num_special=num_special, offset=1, device=device)
