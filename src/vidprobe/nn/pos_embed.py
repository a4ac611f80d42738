"""Fixed (parameter-free) sin/cos position tables.

- :func:`sincos_1d`: ``[sin(p w_i), cos(p w_i)]`` with ``w_i = base ** (-i /
  (dim/2))``, in float64 (MAE's table; Fast3R's image-index embedding, V-JEPA's
  3D table, VGGT's DPT embedding).
- :func:`sincos_3d`: V-JEPA's time-major ``[t | h | w]`` table.
- :func:`uv_sincos_embed`: VGGT's DPT embedding of a pixel / token grid: the
  grid spans ``[-a, a] x [-b, b]`` with ``a / b`` the image aspect ratio and
  ``a^2 + b^2 = 1``, pixel centres at ``(2i + 1 - n) / n`` of the span; the
  first half of the channels encodes x, the second y, each with
  :func:`sincos_1d` (base 100). :func:`uv_sincos_embed_fp32` is the same
  embedding computed in float32 (the probe's).
"""

from __future__ import annotations

import math

import torch


def sincos_1d(dim: int, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """``pos [...]`` -> ``[M, dim]`` float64 (``M = pos.numel()``): ``[sin(p w_i), cos(p w_i)]``.

    ``w_i = 1 / base ** (i / (dim / 2))``, ``i < dim / 2``; computed on ``pos``'s device.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    omega = 1.0 / base ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    ang = pos.reshape(-1).to(torch.float64)[:, None] * omega[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def sincos_3d(dim: int, depth: int, height: int, width: int, uniform_power: bool = True) -> torch.Tensor:
    """Fixed 3D position table ``[depth*height*width, dim]`` float32 (time-major), parts ``[t | h | w]``.

    ``uniform_power``: each axis gets ``2*ceil(dim/6)`` channels (then cut to
    ``dim``); otherwise time gets dim/2 and rows/columns dim/4 each.
    """
    if uniform_power:
        dt = dh = dw = int(math.ceil(dim / 6) * 2)
    else:
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    t, h, w = torch.meshgrid(torch.arange(depth), torch.arange(height), torch.arange(width), indexing="ij")
    emb = torch.cat([sincos_1d(dt, t), sincos_1d(dh, h), sincos_1d(dw, w)], dim=1)
    return emb[:, :dim].float()


def uv_sincos_embed(h: int, w: int, channels: int, aspect: float, device=None) -> torch.Tensor:
    """VGGT's DPT position embedding ``[channels, h, w]`` float32 (``channels`` a multiple of 4).

    ``aspect`` = image width / height. Positions in float32 (``linspace``),
    sin / cos in float64 (:func:`sincos_1d`, base 100), rounded to float32.
    """
    if channels % 4:
        raise ValueError(f"uv_sincos_embed: channels must be a multiple of 4, got {channels}")
    diag = (aspect**2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, device=device, dtype=torch.float32)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, device=device, dtype=torch.float32)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # [h, w]
    half = channels // 2
    emb = torch.cat([sincos_1d(half, uu, 100.0).float(), sincos_1d(half, vv, 100.0).float()], dim=-1)
    return emb.view(h, w, channels).permute(2, 0, 1)


# Copied from vidprobe.nn.pos_embed.uv_sincos_embed (every step in float32, so it differs by up to ~2e-7: the
# probe's numbers were made with these bits; agreement: tests/test_nn_copies.py)
def uv_sincos_embed_fp32(h: int, w: int, channels: int, aspect: float, device=None) -> torch.Tensor:
    """:func:`uv_sincos_embed` in float32 arithmetic; channels beyond ``4 * (channels // 4)`` are zero."""
    diag = math.hypot(aspect, 1.0)
    xs = ((torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1) * (aspect / diag)
    ys = ((torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1) * (1.0 / diag)
    k = channels // 4
    out = torch.zeros(channels, h, w, device=device, dtype=torch.float32)
    if k > 0:
        omega = 100.0 ** (-torch.arange(k, device=device, dtype=torch.float32) / k)
        ax = xs[:, None] * omega  # [w, k]
        ay = ys[:, None] * omega  # [h, k]
        ex = torch.cat([ax.sin(), ax.cos()], dim=-1).T[:, None, :].expand(2 * k, h, w)
        ey = torch.cat([ay.sin(), ay.cos()], dim=-1).T[:, :, None].expand(2 * k, h, w)
        out[: 4 * k] = torch.cat([ex, ey], dim=0)
    return out


UV_EMBEDS = {"float64": uv_sincos_embed, "float32": uv_sincos_embed_fp32}
