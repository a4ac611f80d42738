"""The probe network: config, parameter count, shapes, tokens, RoPE, checkpointing."""

from __future__ import annotations

import pytest
import torch

from vidprobe.probe.config import ProbeConfig, ProbeConfigError
from vidprobe.probe.layers import RoPE2D, apply_rope, grid_positions
from vidprobe.probe.model import Probe, count_parameters

GRIDS = [(21, 37), (30, 52), (30, 53), (18, 32)]


def tiny(**kw) -> ProbeConfig:
    return ProbeConfig.preset("tiny", in_channels=kw.pop("in_channels", 24), **kw)


# ------------------------------------------------------------------ parameter count (from the architecture)
def _block(d: int, heads: int, mlp_ratio: float, qk_norm: bool) -> int:
    hd = d // heads
    m = int(d * mlp_ratio)
    norm1 = 2 * d
    qkv = 3 * d * d + 3 * d
    qkn = 2 * (2 * hd) if qk_norm else 0
    proj = d * d + d
    ls = 2 * d  # two LayerScale vectors
    norm2 = 2 * d
    mlp = (d * m + m) + (m * d + d)
    return norm1 + qkv + qkn + proj + ls + norm2 + mlp


def _dpt(dim_in: int, feats: int, oc: list[int], last: int, out_dim: int) -> int:
    norm = 2 * dim_in
    projects = sum(dim_in * c + c for c in oc)
    resize = (oc[0] * oc[0] * 16 + oc[0]) + (oc[1] * oc[1] * 4 + oc[1]) + 0 + (oc[3] * oc[3] * 9 + oc[3])
    layer_rn = sum(c * feats * 9 for c in oc)  # 3x3, no bias
    rcu = 2 * (feats * feats * 9 + feats)
    out_conv = feats * feats + feats
    fusion = 3 * (2 * rcu + out_conv) + (rcu + out_conv)  # the coarsest block has no skip branch
    head = (feats * (feats // 2) * 9 + feats // 2) + ((feats // 2) * last * 9 + last) + (last * out_dim + out_dim)
    return norm + projects + resize + layer_rn + fusion + head


def _camera(D: int, heads: int, depth: int, mlp_ratio: float, qk_norm: bool) -> int:
    token_norm = trunk_norm = 2 * D
    trunk = depth * _block(D, heads, mlp_ratio, qk_norm)
    empty_pose = 9
    embed_pose = 9 * D + D
    modulation = D * 3 * D + 3 * D
    pose_branch = (D * (D // 2) + D // 2) + ((D // 2) * 9 + 9)
    return token_norm + trunk + trunk_norm + empty_pose + embed_pose + modulation + pose_branch


def expected_params(c: ProbeConfig) -> int:
    w = c.width
    trunk = (2 * c.in_channels) + (c.in_channels * w + w)  # input LayerNorm + Linear
    trunk += 2 * w + 2 * c.num_registers * w  # camera + register tokens, two sets
    trunk += 2 * c.depth * _block(w, c.num_heads, c.mlp_ratio, c.qk_norm)  # frame + global blocks
    total = trunk
    oc = list(c.dpt_out_channels)
    if "points" in c.active_heads:
        total += _dpt(2 * w, c.dpt_features, oc, c.dpt_last_hidden, 4)
    if "depth" in c.active_heads:
        total += _dpt(2 * w, c.dpt_features, oc, c.dpt_last_hidden, 2)
    if "camera" in c.active_heads:
        total += _camera(2 * w, c.camera_heads, c.camera_depth, c.mlp_ratio, c.camera_qk_norm)
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        ProbeConfig(in_channels=1536),
        ProbeConfig.preset("small", in_channels=5120),
        ProbeConfig(in_channels=1024, active_heads=("depth", "camera"), num_registers=0),
        ProbeConfig.preset("small", compat="reference", in_channels=1536),  # 16 heads: QK-norm of 32 channels
        ProbeConfig.preset("small", in_channels=1536, camera_num_heads=4),
    ],
    ids=["reference", "small", "no-points", "small-reference-mode", "camera-heads"],
)
def test_parameter_count_matches_architecture(cfg):
    with torch.device("meta"):
        model = Probe(cfg)
    n = count_parameters(model)
    assert n == expected_params(cfg)
    if cfg.width == 1024 and cfg.in_channels == 1536 and len(cfg.active_heads) == 3:
        # WAN2.1-1.3B features (C=1536), reference probe; printed for the record
        print(f"reference probe parameters (C=1536): {n}")
        assert n == 383_859_224


def test_reference_config_values():
    c = ProbeConfig(in_channels=1536)
    assert (c.width, c.depth, c.num_heads, c.mlp_ratio, c.layerscale) == (1024, 4, 16, 4.0, 0.01)
    assert c.qk_norm and c.rope and c.num_registers == 4 and c.out_hw == (294, 518)
    assert c.dpt_features == 256 and c.dpt_out_channels == (256, 512, 1024, 1024)
    assert c.camera_depth == 4 and c.camera_iters == 4 and not c.grad_checkpointing
    assert c.dpt_layer_indices == (0, 1, 2, 3)
    s = ProbeConfig.preset("small", in_channels=8)
    assert s.width == 512 and s.head_dim == 64 and s.dpt_out_channels == (128, 256, 512, 512)


def test_config_roundtrip_and_errors():
    c = tiny(active_heads=["depth", "camera"], out_hw=[28, 42])
    d = c.to_dict()
    assert d["active_heads"] == ["depth", "camera"] and d["out_hw"] == [28, 42]
    assert ProbeConfig.from_dict(d) == c
    assert ProbeConfig.from_dict({"preset": "tiny", "in_channels": 24, "out_hw": [28, 42], "active_heads": ["depth", "camera"]}) == c
    with pytest.raises(ProbeConfigError, match="active_heads"):
        tiny(active_heads=("normals",))
    with pytest.raises(ProbeConfigError, match="num_heads"):
        tiny(num_heads=5)
    with pytest.raises(ProbeConfigError, match="widht"):
        ProbeConfig.from_dict({"in_channels": 3, "widht": 5})
    with pytest.raises(ProbeConfigError, match="preset"):
        ProbeConfig.preset("huge", in_channels=3)
    with pytest.raises(ProbeConfigError, match="in_channels"):
        ProbeConfig.from_dict({"width": 64})
    with pytest.raises(ProbeConfigError, match="camera_num_heads"):
        tiny(camera_num_heads=3)
    with pytest.raises(ProbeConfigError, match="token_init_std"):
        tiny(token_init_std=0)
    with pytest.raises(ProbeConfigError, match="compat"):
        ProbeConfig.preset("tiny", compat="paper", in_channels=3)
    # a run's recorded probe config (run.json) rebuilds the same probe; compat in a mapping applies the mode
    r = ProbeConfig.from_dict({"preset": "tiny", "compat": "reference", "in_channels": 24})
    assert r.dpt_skip_relu and r.num_heads == 16 and ProbeConfig.from_dict(r.to_dict()) == r


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("grid", GRIDS, ids=[f"{h}x{w}" for h, w in GRIDS])
def test_every_grid_decodes_to_294x518(grid):
    torch.manual_seed(0)
    h, w = grid
    model = Probe(tiny()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, h, w, 24))
    assert out["points"].shape == (1, 2, 294, 518, 3)
    assert out["points_conf"].shape == (1, 2, 294, 518)
    assert out["depth"].shape == (1, 2, 294, 518)
    assert out["depth_conf"].shape == (1, 2, 294, 518)
    assert out["pose_enc"].shape == (1, 2, 9)
    assert len(out["pose_enc_list"]) == 4 and torch.equal(out["pose_enc_list"][-1], out["pose_enc"])
    for k in ("points", "points_conf", "depth", "depth_conf", "pose_enc"):
        assert torch.isfinite(out[k]).all(), k
    assert (out["points_conf"] > 1).all() and (out["depth_conf"] > 1).all()  # 1 + e^x
    assert (out["depth"] > 0).all()  # exp
    assert (out["pose_enc"][..., 7:] >= 0).all()  # fov: relu


@pytest.mark.parametrize("grid", GRIDS, ids=[f"{h}x{w}" for h, w in GRIDS])
def test_reference_config_shapes_on_meta(grid):
    h, w = grid
    with torch.device("meta"):
        model = Probe(ProbeConfig(in_channels=1536))
        out = model(torch.empty(1, 4, h, w, 1536))
    assert out["points"].shape == (1, 4, 294, 518, 3)
    assert out["depth"].shape == (1, 4, 294, 518)
    assert out["depth_conf"].shape == (1, 4, 294, 518)
    assert out["pose_enc"].shape == (1, 4, 9)


def test_block_outputs_concatenate_frame_and_global():
    model = Probe(tiny())
    outs = model.aggregate(torch.randn(2, 3, 4, 5, 24))
    assert len(outs) == 2
    assert outs[0].shape == (2, 3, 1 + 4 + 20, 128)  # camera + 4 registers + 4*5 patches, 2*width
    # the global half of layer k is the input of layer k+1's frame block: they differ (attention ran)
    assert not torch.allclose(outs[0][..., :64], outs[0][..., 64:])


def test_explicit_output_size_and_bad_input():
    model = Probe(tiny(active_heads=("depth",))).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 5, 7, 24), out_hw=(33, 50))
    assert out["depth"].shape == (1, 2, 33, 50)
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.randn(1, 2, 5, 7, 23))
    with pytest.raises(ValueError, match=r"\[B, S, h, w, C\]"):
        model(torch.randn(2, 5, 7, 24))


@pytest.mark.parametrize("heads", [("camera",), ("depth",), ("points", "camera")])
def test_only_active_heads_are_built_and_run(heads):
    model = Probe(tiny(active_heads=heads)).eval()
    assert (model.point_head is not None) == ("points" in heads)
    assert (model.depth_head is not None) == ("depth" in heads)
    assert (model.camera_head is not None) == ("camera" in heads)
    with torch.no_grad():
        out = model(torch.randn(1, 2, 4, 6, 24), out_hw=(16, 24))
    want = set()
    if "points" in heads:
        want |= {"points", "points_conf"}
    if "depth" in heads:
        want |= {"depth", "depth_conf"}
    if "camera" in heads:
        want |= {"pose_enc", "pose_enc_list"}
    assert set(out) == want


# -------------------------------------------------------------------- reference-frame tokens
def test_reference_frame_tokens_differ():
    torch.manual_seed(0)
    model = Probe(tiny()).eval()
    special = model.special_tokens(2, 4)
    assert special.shape == (2, 4, 5, 64)
    assert torch.equal(special[:, 1], special[:, 2]) and torch.equal(special[:, 1], special[:, 3])
    assert not torch.allclose(special[:, 0], special[:, 1])
    # the same features in every frame: only frame 0 gets a different result
    f = torch.randn(1, 1, 4, 6, 24).expand(1, 4, 4, 6, 24).contiguous()
    with torch.no_grad():
        out = model(f, out_hw=(16, 24))
    pose = out["pose_enc"][0]
    assert torch.allclose(pose[1], pose[2], atol=1e-5) and torch.allclose(pose[1], pose[3], atol=1e-5)
    assert (pose[0] - pose[1]).abs().max() > 1e-4
    assert (out["depth"][0, 0] - out["depth"][0, 1]).abs().max() > 1e-5
    assert torch.allclose(out["depth"][0, 1], out["depth"][0, 2], atol=1e-5)


# ------------------------------------------------------------------------------------ RoPE
def test_rope_is_a_rotation_and_relative():
    torch.manual_seed(0)
    rope = RoPE2D(32, base=100.0)
    pos = torch.randint(0, 40, (10, 2))
    x = torch.randn(3, 10, 32)
    cos, sin = rope.tables(pos)
    y = apply_rope(x, cos, sin)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # norm preserving
    assert not torch.allclose(y, x, atol=1e-3)

    def score(q, k, pq, pk):
        cq, sq = rope.tables(pq[None])
        ck, sk = rope.tables(pk[None])
        return (apply_rope(q[None], cq, sq) * apply_rope(k[None], ck, sk)).sum()

    q, k = torch.randn(32), torch.randn(32)
    p1, p2 = torch.tensor([3, 7]), torch.tensor([11, 2])
    shift = torch.tensor([5, -4])
    s0 = score(q, k, p1, p2)
    assert torch.allclose(s0, score(q, k, p1 + shift, p2 + shift), atol=1e-4)  # shift invariance
    assert not torch.allclose(s0, score(q, k, p1, p2 + shift), atol=1e-3)  # depends on the offset
    # both axes matter: a pure row shift of one side changes the score, so does a column shift
    assert not torch.allclose(s0, score(q, k, p1 + torch.tensor([2, 0]), p2), atol=1e-3)
    assert not torch.allclose(s0, score(q, k, p1 + torch.tensor([0, 2]), p2), atol=1e-3)


def test_special_tokens_are_not_rotated():
    pos = grid_positions(2, 3, num_special=5)
    assert pos.shape == (11, 2)
    assert (pos[:5] == 0).all()
    assert pos[5].tolist() == [1, 1] and pos[-1].tolist() == [2, 3]
    rope = RoPE2D(16)
    x = torch.randn(11, 16)
    y = apply_rope(x, *rope.tables(pos))
    assert torch.allclose(y[:5], x[:5])
    assert not torch.allclose(y[5:], x[5:])


# --------------------------------------------------------------------- camera refinement
def test_camera_refinement_inputs_are_detached():
    torch.manual_seed(0)
    model = Probe(tiny(active_heads=("camera",)))
    feats = torch.randn(1, 3, 4, 5, 24)
    out = model(feats)
    assert len(out["pose_enc_list"]) == 4
    # the empty-pose embedding feeds step 0 only; later steps see step 0's estimate detached
    out["pose_enc_list"][-1].sum().backward()
    g = model.camera_head.empty_pose_tokens.grad
    assert g is None or torch.count_nonzero(g) == 0
    model.zero_grad()
    out = model(feats)
    out["pose_enc_list"][0].sum().backward()
    assert torch.count_nonzero(model.camera_head.empty_pose_tokens.grad) > 0


# ------------------------------------------------------------------- gradient checkpointing
def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    cfg = tiny()
    a = Probe(cfg)
    b = Probe(tiny(grad_checkpointing=True))
    b.load_state_dict(a.state_dict())
    assert b.config.grad_checkpointing and not a.config.grad_checkpointing
    feats = torch.randn(1, 2, 5, 7, 24)
    calls = {"a": 0, "b": 0}
    a.frame_blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__("a", calls["a"] + 1))
    b.frame_blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__("b", calls["b"] + 1))
    b.point_head.register_forward_pre_hook(lambda *_: calls.__setitem__("b", calls["b"] + 10))
    results = []
    for m in (a, b):
        m.train()
        out = m(feats, out_hw=(20, 28))
        loss = out["points"].square().mean() + out["depth"].mean() + out["points_conf"].mean() + sum(
            p.square().sum() for p in out["pose_enc_list"]
        )
        loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (oa, ga), (ob, gb) = results
    assert calls == {"a": 1, "b": 22}  # checkpointed block and head ran again in the backward pass
    for k in ("points", "points_conf", "depth", "depth_conf", "pose_enc"):
        assert torch.allclose(oa[k], ob[k], atol=1e-6), k
    assert ga.keys() == gb.keys() and len(ga) == len(list(a.parameters()))
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-4), n


def test_bf16_autocast_trunk_fp32_heads():
    torch.manual_seed(0)
    model = Probe(tiny())
    seen = []
    model.frame_blocks[0].attn.proj.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 2, 4, 6, 24), out_hw=(16, 24))
    assert seen == [(torch.bfloat16, torch.bfloat16)]  # attention itself ran in bf16
    for k in ("points", "points_conf", "depth", "depth_conf", "pose_enc"):
        assert out[k].dtype == torch.float32 and torch.isfinite(out[k]).all(), k
    (out["points"].mean() + out["pose_enc"].mean()).backward()
    assert model.input_proj.weight.grad is not None and torch.isfinite(model.input_proj.weight.grad).all()
