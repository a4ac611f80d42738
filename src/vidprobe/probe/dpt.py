"""DPT dense-prediction head with explicit token grid and output size.

Decoding path for a token grid ``(h, w)`` and an output size ``(H, W)``
(four block outputs in, one map out):

1. each level: LayerNorm over the token channels (shared across levels),
   1x1 conv to ``out_channels[i]``, + sin/cos position embedding (x0.1),
   then a resize to ``4h x 4w`` (transposed conv, k=s=4), ``2h x 2w``
   (transposed conv, k=s=2), ``h x w`` (identity) and
   ``ceil(h/2) x ceil(w/2)`` (3x3 conv, stride 2);
2. 3x3 convs to ``features`` channels, then fusion from coarse to fine:
   each fusion block adds a residual-conv-refined skip, refines again,
   bilinearly resizes to the next finer level's exact size (the finest one
   to ``8h x 8w``) and applies a 1x1 conv;
3. 3x3 conv to ``features/2``, bilinear interpolation (align_corners) to
   exactly ``(H, W)``, + position embedding, 3x3 conv to ``last_hidden``,
   ReLU, 1x1 conv to the output channels, activations.

So 21x37 tokens reach 168x296 before the last interpolation, 30x52 reach
240x416, 30x53 240x424, 18x32 144x256; every grid ends at ``(H, W)``.

Activations: ``inv_log`` ``sign(x) (e^|x| - 1)``, ``exp``, ``linear``;
confidence ``expp1`` ``1 + e^x``.

Residual conv unit: ``skip + conv2(relu(conv1(relu(x))))`` with ``skip = x``,
or ``skip = relu(x)`` with ``skip_relu`` (VGGT's unit applies an in-place
ReLU to its input, so its skip adds ``relu(x)``; the release's probe
inherits it: ``tests/test_parity_probe.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(x.abs())
    if kind == "exp":
        return torch.exp(x)
    if kind == "expp1":
        return 1 + torch.exp(x)
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"activate: unknown activation {kind!r}")


def sincos_pos_embed(h: int, w: int, channels: int, aspect: float, device=None, dtype=None) -> torch.Tensor:
    """Parameter-free 2D sin/cos embedding ``[channels, h, w]``.

    Pixel centres are placed on a grid spanning ``[-a, a] x [-b, b]`` with
    ``a / b`` the output aspect ratio ``W / H`` and ``a^2 + b^2 = 1``; the
    first half of the channels encodes x, the second y, each as
    ``sin(p w_k), cos(p w_k)`` with ``w_k = 100^(-k/K)``. Channels beyond
    ``4K`` (``K = channels // 4``) are zero.
    """
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
    return out.to(dtype or torch.float32)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, skip_relu: bool = False):
        super().__init__()
        self.skip_relu = skip_relu
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x)
        return (h if self.skip_relu else x) + self.conv2(F.relu(self.conv1(h)))


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_skip: bool = True, skip_relu: bool = False):
        super().__init__()
        self.res1 = ResidualConvUnit(features, skip_relu) if has_skip else None
        self.res2 = ResidualConvUnit(features, skip_relu)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            if self.res1 is None:
                raise RuntimeError("FusionBlock built without a skip branch got a skip input")
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Four token maps -> dense prediction ``[N, out_dim - 1, H, W]`` + confidence ``[N, H, W]``.

    The last output channel is the confidence; the others the prediction.
    """

    def __init__(
        self,
        dim_in: int,
        output_dim: int,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        last_hidden: int = 32,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        pos_embed: bool = True,
        skip_relu: bool = False,
    ):
        super().__init__()
        oc = list(out_channels)
        if len(oc) != 4:
            raise ValueError(f"DPTHead: out_channels needs 4 entries, got {oc}")
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, 1) for c in oc])
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList([nn.Conv2d(c, features, 3, padding=1, bias=False) for c in oc])
        self.fusion = nn.ModuleList([FusionBlock(features, has_skip=i < 3, skip_relu=skip_relu) for i in range(4)])  # fusion[3]: coarsest
        self.out_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.out_conv2 = nn.Conv2d(features // 2, last_hidden, 3, padding=1)
        self.out_conv3 = nn.Conv2d(last_hidden, output_dim, 1)

    def forward(
        self, tokens: Sequence[torch.Tensor], grid_hw: tuple[int, int], out_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens``: 4 tensors ``[N, h*w, dim_in]`` (patch tokens only, row-major)."""
        h, w = grid_hw
        H, W = out_hw
        if len(tokens) != 4:
            raise ValueError(f"DPTHead: expected 4 token maps, got {len(tokens)}")
        aspect = W / H
        levels = []
        for i, t in enumerate(tokens):
            if t.shape[1] != h * w:
                raise ValueError(f"DPTHead: token map {i} has {t.shape[1]} tokens, grid {h}x{w} needs {h * w}")
            x = self.norm(t).transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
            x = self.projects[i](x)
            if self.pos_embed:
                x = x + 0.1 * sincos_pos_embed(h, w, x.shape[1], aspect, x.device, x.dtype)
            levels.append(self.resize[i](x))
        rn = [conv(x) for conv, x in zip(self.layer_rn, levels)]
        out = self.fusion[3](rn[3], None, size=rn[2].shape[-2:])
        out = self.fusion[2](out, rn[2], size=rn[1].shape[-2:])
        out = self.fusion[1](out, rn[1], size=rn[0].shape[-2:])
        out = self.fusion[0](out, rn[0], size=(2 * rn[0].shape[-2], 2 * rn[0].shape[-1]))
        out = self.out_conv1(out)
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = out + 0.1 * sincos_pos_embed(H, W, out.shape[1], aspect, out.device, out.dtype)
        out = self.out_conv3(F.relu(self.out_conv2(out)))
        pred = activate(out[:, :-1], self.activation)
        conf = activate(out[:, -1], self.conf_activation)
        return pred, conf
