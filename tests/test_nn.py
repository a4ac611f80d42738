"""The shared network parts (vidprobe.nn): RoPE rules and numerics, meta device, layering, legacy probe keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidprobe.nn import rope
from vidprobe.nn.vit import Block
from vidprobe.probe.config import ProbeConfig
from vidprobe.probe.model import Probe

NN = Path(__file__).resolve().parents[1] / "src" / "vidprobe" / "nn"


# ------------------------------------------------------------------ RoPE2D
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def lookup_rope(tokens: torch.Tensor, positions: torch.Tensor, base: float = 100.0) -> torch.Tensor:
    """2D RoPE written as VGGT / CroCo write it: a cos/sin table over 0..max(pos), looked up per half."""
    half = tokens.shape[-1] // 2
    inv = 1.0 / (base ** (torch.arange(0, half, 2).float() / half))
    n = int(positions.max()) + 1
    ang = torch.outer(torch.arange(n, dtype=inv.dtype), inv).to(tokens.dtype)
    ang = torch.cat([ang, ang], dim=-1)
    cos, sin = ang.cos(), ang.sin()

    def one(x, p):
        return x * F.embedding(p, cos)[:, None] + _rotate_half(x) * F.embedding(p, sin)[:, None]

    y, x = tokens.chunk(2, dim=-1)
    return torch.cat([one(y, positions[..., 0]), one(x, positions[..., 1])], dim=-1)


def probe_rope(tokens: torch.Tensor, positions: torch.Tensor, base: float = 100.0) -> torch.Tensor:
    """The probe's rule: float64 frequencies rounded to float32, float32 tables [a_y, a_y, a_x, a_x]."""
    q = tokens.shape[-1] // 4
    inv = (base ** (-torch.arange(q, dtype=torch.float64) / q)).float()
    pos = positions.float()
    ay, ax = pos[..., 0:1] * inv, pos[..., 1:2] * inv
    ang = torch.cat([ay, ay, ax, ax], dim=-1)
    cos, sin = ang.cos().to(tokens.dtype), ang.sin().to(tokens.dtype)
    y, x = tokens.chunk(2, dim=-1)
    rot = torch.cat([_rotate_half(y), _rotate_half(x)], dim=-1)
    return tokens * cos + rot * sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_rope2d_default_is_the_lookup_table_rule(dtype, head_dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 11, head_dim, generator=g).to(dtype)
    pos = torch.randint(0, 40, (2, 11, 2), generator=g)
    assert torch.equal(rope.RoPE2D(100.0)(x, pos), lookup_rope(x, pos))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope2d_probe_setting_is_the_probes_rule(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 9, 32, generator=g).to(dtype)
    pos = torch.randint(0, 30, (9, 2), generator=g)
    r = rope.RoPE2D(100.0, head_dim=32, exact_freqs=True, fp32_tables=True)
    assert torch.equal(r(x, pos), probe_rope(x, pos))
    cos, sin = r.tables(pos)
    assert cos.dtype == torch.float32 and cos.shape == (9, 32)


def test_rope2d_settings_differ_only_in_the_last_bits():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 50, 64, generator=g)
    pos = torch.randint(0, 60, (2, 50, 2), generator=g)
    a = rope.RoPE2D(100.0)(x, pos)
    b = rope.RoPE2D(100.0, exact_freqs=True, fp32_tables=True)(x, pos)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.equal(rope.rope_frequencies(32, 100.0), rope.rope_frequencies(32, 100.0, exact=True))


def test_rope2d_and_block_run_on_meta():
    """No value of the positions is read (no table sized by their maximum): full-size models build and run on meta."""
    r = rope.RoPE2D(100.0)
    pos = rope.grid_positions(3, 4, num_special=5, offset=1, device="meta")[None].expand(2, -1, -1)
    q = torch.empty(2, 4, 17, 16, device="meta")
    out = r(q, pos)
    assert out.is_meta and out.shape == q.shape
    with torch.device("meta"):
        blk = Block(64, 4, qk_norm=True, init_values=0.01, rope=r)
    y = blk(torch.empty(2, 17, 64, device="meta"), pos)
    assert y.is_meta and y.shape == (2, 17, 64)


def test_grid_positions():
    pos = rope.grid_positions(2, 3, num_special=2, offset=1)
    assert pos.tolist() == [[0, 0], [0, 0], [1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]
    assert rope.grid_positions(2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_axial_rope_tables_layout():
    """Open-Sora's layout: per-axis angles concatenated, then repeated twice (one rotate-half over the whole D)."""
    ids = torch.tensor([[[2.0, 3.0, 5.0]]])
    cos, sin = rope.axial_rope_tables(ids, [4, 6, 6], 10000)
    assert cos.shape == (1, 1, 1, 16)
    ang = torch.cat([2.0 * 10000 ** (-torch.arange(0, 4, 2) / 4), 3.0 * 10000 ** (-torch.arange(0, 6, 2) / 6),
                     5.0 * 10000 ** (-torch.arange(0, 6, 2) / 6)])
    torch.testing.assert_close(cos[0, 0, 0], torch.cat([ang, ang]).cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[0, 0, 0], torch.cat([ang, ang]).sin(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ layering
ALLOWED = {"__future__", "math", "collections", "typing", "dataclasses", "torch", "numpy"}


@pytest.mark.parametrize("path", sorted(NN.glob("*.py")), ids=lambda p: p.name)
def test_nn_imports_only_torch_and_itself(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for n in names:
            assert n.split(".")[0] in ALLOWED or n == "vidprobe.nn" or n.startswith("vidprobe.nn."), f"{path.name}: {n}"


# ------------------------------------------------------------------ probe state dicts from before the rename
def legacy_name(key: str) -> str:
    """Today's probe key -> the key the probe wrote before its heads took VGGT's names."""
    rules = [
        (r"(\w+)_head\.resize_layers\.(.+)", lambda m: f"{m[1]}_head.resize.{m[2]}"),
        (r"(\w+)_head\.scratch\.layer(\d)_rn\.(.+)", lambda m: f"{m[1]}_head.layer_rn.{int(m[2]) - 1}.{m[3]}"),
        (r"(\w+)_head\.scratch\.refinenet(\d)\.resConfUnit(\d)\.(.+)",
         lambda m: f"{m[1]}_head.fusion.{int(m[2]) - 1}.res{m[3]}.{m[4]}"),
        (r"(\w+)_head\.scratch\.refinenet(\d)\.out_conv\.(.+)", lambda m: f"{m[1]}_head.fusion.{int(m[2]) - 1}.out_conv.{m[3]}"),
        (r"(\w+)_head\.scratch\.output_conv1\.(.+)", lambda m: f"{m[1]}_head.out_conv1.{m[2]}"),
        (r"(\w+)_head\.scratch\.output_conv2\.0\.(.+)", lambda m: f"{m[1]}_head.out_conv2.{m[2]}"),
        (r"(\w+)_head\.scratch\.output_conv2\.2\.(.+)", lambda m: f"{m[1]}_head.out_conv3.{m[2]}"),
        (r"camera_head\.poseLN_modulation\.(.+)", lambda m: f"camera_head.modulation.{m[1]}"),
        (r"camera_head\.empty_pose_tokens", lambda m: "camera_head.empty_pose"),
    ]
    for pat, f in rules:
        m = re.fullmatch(pat, key)
        if m:
            return f(m)
    return key


def test_a_probe_saved_with_the_old_names_loads():
    torch.manual_seed(0)
    cfg = ProbeConfig.preset("tiny", in_channels=8)
    sd = Probe(cfg).state_dict()
    old = {legacy_name(k): (v.reshape(-1) if k.endswith("empty_pose_tokens") else v) for k, v in sd.items()}
    assert "point_head.fusion.3.res2.conv1.weight" in old and old["camera_head.empty_pose"].shape == (9,)
    before = dict(old)
    fresh = Probe(cfg)
    fresh.load_state_dict(old, strict=True)
    assert old.keys() == before.keys()  # the caller's dict is left as it was
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(RuntimeError, match="Missing key"):  # a key that is neither old nor new still fails
        bad = dict(old)
        bad.pop("point_head.out_conv3.bias")
        Probe(cfg).load_state_dict(bad, strict=True)
