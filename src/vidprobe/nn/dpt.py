"""DPT dense-prediction head (VGGT's ``heads/dpt_head.py`` layout) with explicit token grid and output size.

Parameter names are VGGT-1B's (``norm``, ``projects.i``, ``resize_layers.i``,
``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}.resConfUnit{1,2}.conv{1,2}``,
``scratch.refinenet{1..4}.out_conv``, ``scratch.output_conv1``,
``scratch.output_conv2.{0,2}``), which the study's release probe shares.

Decoding path for a token grid ``(h, w)`` and an output size ``(H, W)``
(four block outputs in, one map out):

1. each level: LayerNorm over the token channels (shared across levels),
   1x1 conv to ``out_channels[i]``, + sin/cos position embedding (x0.1,
   :mod:`vidprobe.nn.pos_embed`), then a resize to ``4h x 4w`` (transposed
   conv, k=s=4), ``2h x 2w`` (transposed conv, k=s=2), ``h x w`` (identity)
   and ``ceil(h/2) x ceil(w/2)`` (3x3 conv, stride 2);
2. 3x3 convs to ``features`` channels (``layer{i}_rn``), then fusion from
   coarse to fine (``refinenet4`` .. ``refinenet1``): each fusion block adds a
   residual-conv-refined skip, refines again, bilinearly resizes to the next
   finer level's exact size (the finest one to ``8h x 8w``) and applies a 1x1
   conv;
3. 3x3 conv to ``features/2``, bilinear interpolation (align_corners) to
   exactly ``(H, W)``, + position embedding, 3x3 conv to ``last_hidden``,
   ReLU, 1x1 conv to the output channels, activations.

So 21x37 tokens reach 168x296 before the last interpolation, 30x52 reach
240x416, 30x53 240x424, 18x32 144x256; every grid ends at ``(H, W)``.

Activations: ``inv_log`` ``sign(x) (e^|x| - 1)``, ``exp``, ``linear``,
``relu``; confidence ``expp1`` ``1 + e^x``.

Residual conv unit: ``skip + conv2(relu(conv1(relu(x))))`` with ``skip = x``,
or ``skip = relu(x)`` with ``skip_relu`` (VGGT's unit applies an in-place
ReLU to its input, so its skip adds ``relu(x)``; the VGGT-1B weights were
trained that way and the release's probe inherits it:
``tests/test_parity_vggt.py``, ``tests/test_parity_probe.py``).

Position embedding: ``pos_embed="float64"`` is VGGT's own computation
(:func:`~vidprobe.nn.pos_embed.uv_sincos_embed`), ``"float32"`` the probe's
(:func:`~vidprobe.nn.pos_embed.uv_sincos_embed_fp32`), None none. The head
runs in float32 (its callers disable autocast).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidprobe.nn.pos_embed import UV_EMBEDS


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


class ResidualConvUnit(nn.Module):
    """``[N, f, h, w] -> [N, f, h, w]``: ``skip + conv2(relu(conv1(relu(x))))`` (module docstring)."""

    def __init__(self, features: int, skip_relu: bool = False):
        super().__init__()
        self.skip_relu = skip_relu
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x)
        return (h if self.skip_relu else x) + self.conv2(F.relu(self.conv1(h)))


class FusionBlock(nn.Module):
    """``x [N, f, h, w]`` (+ ``skip``, same shape) -> ``[N, f, *size]`` (``size`` default ``2h x 2w``).

    ``x + resConfUnit1(skip)`` (blocks built with ``has_residual``), then
    ``resConfUnit2``, bilinear resize (align_corners), 1x1 ``out_conv``.
    """

    def __init__(self, features: int, has_residual: bool = True, skip_relu: bool = False):
        super().__init__()
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features, skip_relu)
        self.resConfUnit2 = ResidualConvUnit(features, skip_relu)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            if not self.has_residual:
                raise RuntimeError("FusionBlock built without a skip branch got a skip input")
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Four token maps -> dense prediction ``[N, output_dim - 1, H, W]`` + confidence ``[N, H, W]``.

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
        pos_embed: str | None = "float64",
        skip_relu: bool = False,
    ):
        super().__init__()
        oc = list(out_channels)
        if len(oc) != 4:
            raise ValueError(f"DPTHead: out_channels needs 4 entries, got {oc}")
        if pos_embed is not None and pos_embed not in UV_EMBEDS:
            raise ValueError(f"DPTHead: pos_embed must be one of {sorted(UV_EMBEDS)} or None, got {pos_embed!r}")
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = UV_EMBEDS[pos_embed] if pos_embed is not None else None
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        s = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(s, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):  # refinenet4: the coarsest level, no skip input
            setattr(s, f"refinenet{i}", FusionBlock(features, has_residual=i < 4, skip_relu=skip_relu))
        s.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        s.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, last_hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(last_hidden, output_dim, 1)
        )
        self.scratch = s

    def _embed(self, x: torch.Tensor, aspect: float) -> torch.Tensor:
        if self.pos_embed is None:
            return x
        pe = self.pos_embed(x.shape[-2], x.shape[-1], x.shape[1], aspect, x.device)
        return x + (0.1 * pe).to(x.dtype)

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
            x = self._embed(self.projects[i](x), aspect)
            levels.append(self.resize_layers[i](x))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        out = s.refinenet4(l4, size=l3.shape[-2:])
        out = s.refinenet3(out, l3, size=l2.shape[-2:])
        out = s.refinenet2(out, l2, size=l1.shape[-2:])
        out = s.output_conv1(s.refinenet1(out, l1))
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=True)
        out = s.output_conv2(self._embed(out, aspect))
        pred = activate(out[:, :-1], self.activation)
        conf = activate(out[:, -1], self.conf_activation)
        return pred, conf
