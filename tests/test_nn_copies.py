"""Every marked copy (``# Copied from vidprobe.nn.<module>.<name> (why)``) agrees with its original.

A copy stays where an official parameter name or a numerical detail forces it; each is listed in ``COPIES`` and
compared with its original on the same weights and inputs, and a copy marked in ``src/`` but missing here fails.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

from vidprobe.backbones import transformer_opensora as tos
from vidprobe.nn import pos_embed
from vidprobe.nn.vit import Mlp

SRC = Path(__file__).resolve().parents[1] / "src" / "vidprobe"
MARK = re.compile(r"# Copied from (vidprobe\.nn\.[A-Za-z_][\w.]*)")

# (file under src/vidprobe holding the copy, its original)
COPIES = {
    ("nn/pos_embed.py", "vidprobe.nn.pos_embed.uv_sincos_embed"),  # uv_sincos_embed_fp32: float32 arithmetic
    ("backbones/transformer_opensora.py", "vidprobe.nn.vit.Mlp"),  # _mlp: Open-Sora's names img_mlp.0 / .2
}


def marked_copies() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        for line in path.read_text().splitlines():
            m = MARK.search(line)
            if m:
                found.add((path.relative_to(SRC).as_posix(), m.group(1)))
    return found


def test_every_marked_copy_is_compared_here():
    assert marked_copies() == COPIES


@pytest.mark.parametrize("original", sorted(o for _, o in COPIES))
def test_each_original_exists(original):
    module, name = original.rsplit(".", 1)
    assert hasattr(importlib.import_module(module), name), original


# ------------------------------------------------------------------ uv_sincos_embed_fp32
@pytest.mark.parametrize("h,w,channels", [(21, 37, 128), (30, 53, 64), (18, 32, 256), (168, 296, 16), (2, 3, 8)])
def test_uv_embed_float32_copy_agrees(h, w, channels):
    for aspect in (w / h, 518 / 294, 1.0):
        ref = pos_embed.uv_sincos_embed(h, w, channels, aspect)
        copy = pos_embed.uv_sincos_embed_fp32(h, w, channels, aspect)
        assert copy.shape == ref.shape == (channels, h, w) and copy.dtype == ref.dtype == torch.float32
        torch.testing.assert_close(copy, ref, rtol=0, atol=5e-7)
        # the comparison can fail: the other aspect ratio moves the grid
        assert float((pos_embed.uv_sincos_embed_fp32(h, w, channels, 2.0 * aspect) - ref).abs().max()) > 1e-3


def test_uv_embed_follows_its_rule():
    """x in the first half of the channels (columns), y in the second (rows); pixel 0 by the written rule."""
    aspect = 7 / 5
    diag = math.hypot(aspect, 1.0)
    x0, y0 = -(aspect / diag) * 6 / 7, -(1 / diag) * 4 / 5  # the first pixel centre, (2i + 1 - n) / n of the span
    freqs = torch.tensor([100.0 ** (-i / 4) for i in range(4)], dtype=torch.float64)
    for emb in (pos_embed.uv_sincos_embed(5, 7, 16, aspect), pos_embed.uv_sincos_embed_fp32(5, 7, 16, aspect)):
        assert torch.equal(emb[:8], emb[:8, :1].expand(8, 5, 7))  # no change along a column
        assert torch.equal(emb[8:], emb[8:, :, :1].expand(8, 5, 7))  # no change along a row
        want = torch.cat([(x0 * freqs).sin(), (x0 * freqs).cos(), (y0 * freqs).sin(), (y0 * freqs).cos()])
        torch.testing.assert_close(emb[:, 0, 0].double(), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        pos_embed.uv_sincos_embed(2, 2, 6, 1.0)


# ------------------------------------------------------------------ Open-Sora's _mlp
def test_opensora_mlp_copy_agrees():
    torch.manual_seed(0)
    seq = tos._mlp(8, 32)
    ours = Mlp(8, 32, approximate="tanh")
    ours.load_state_dict({"fc1.weight": seq[0].weight, "fc1.bias": seq[0].bias,
                          "fc2.weight": seq[2].weight, "fc2.bias": seq[2].bias}, strict=True)
    x = torch.randn(3, 5, 8)
    assert torch.equal(ours(x), seq(x))
    exact = Mlp(8, 32)  # the comparison can fail: the erf GELU differs
    exact.load_state_dict(ours.state_dict())
    assert not torch.allclose(exact(x), seq(x), rtol=0, atol=1e-6)
