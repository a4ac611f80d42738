"""Patch embedding: a strided convolution, flattened to tokens (parameter ``proj``)."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """``[N, C, H, W] -> [N, (H/p)(W/p), dim]`` (a ``p x p`` conv, stride ``p``), row-major tokens.

    With ``tubelet_size``: ``[N, C, T, H, W] -> [N, (T/t)(H/p)(W/p), dim]``
    (a ``t x p x p`` Conv3d), time-major.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3, tubelet_size: int | None = None):
        super().__init__()
        if tubelet_size is None:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        else:
            k = (tubelet_size, patch_size, patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
