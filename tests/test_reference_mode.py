"""``compat: reference``, setting by setting.

Each test computes the release's rule by hand (from its description in ``MODE_SETTINGS`` and
``docs``/``protocol.md``, not from the code under test) and checks reference mode against it, and that
clean mode keeps vidprobe's own rule. The end-to-end proof against the release's code is
``tests/test_parity_probe.py``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from vidprobe.data.sampling import FrameSampler
from vidprobe.probe.config import KEEP, MODE_SETTINGS, ProbeConfig, mode_defaults
from vidprobe.nn.dpt import ResidualConvUnit
from vidprobe.probe.losses import LossConfig, prepare_targets, probe_loss, targets_for
from vidprobe.probe.model import Probe
from vidprobe.probe.train import (
    ConfigError,
    OptimConfig,
    TrainConfig,
    build_optimizer,
    lr_schedule,
    steps_in_epoch,
    warmup_steps,
)


def cfg_with(compat: str, section: str | None = None, field: str | None = None, value=None) -> TrainConfig:
    d: dict = {"features": "-", "dataset": "-", "compat": compat}
    if section == "train":
        d[field] = value
    elif section is not None:
        d[section] = {field: value}
    return TrainConfig.from_dict(d)


def resolved(tc: TrainConfig, section: str, field: str):
    if section in ("probe", "loss"):
        return getattr(tc, section).get(field, KEEP)
    return getattr({"optim": tc.optim, "sampler": tc.sampler, "train": tc}[section], field)


# ------------------------------------------------------------------------------------- the table
def test_every_mode_setting_takes_the_mode_default_and_an_explicit_value_wins():
    names = [(s.section, s.field) for s in MODE_SETTINGS]
    assert len(set(names)) == len(names)
    clean, ref = cfg_with("clean"), cfg_with("reference")
    assert clean.compat == "clean" and TrainConfig().compat == "clean"  # clean is the default
    for st in MODE_SETTINGS:
        assert resolved(clean, st.section, st.field) == st.clean, st.field
        assert resolved(ref, st.section, st.field) == st.reference, st.field
        # an explicit value beats the mode's, in both directions
        for compat, value in (("reference", st.clean), ("clean", st.reference)):
            if value is KEEP:
                value = 8
            if value is None and st.field in ("warmup_frac", "warmup_epochs"):
                continue  # the warm-up length needs one of the two (test below)
            got = resolved(cfg_with(compat, st.section, st.field, value), st.section, st.field)
            assert got == value, (compat, st.field, got, value)
    assert TrainConfig.from_dict(ref.to_dict()) == ref  # the resolved config round-trips
    with pytest.raises(ConfigError, match="compat"):
        cfg_with("paper")


def test_the_warm_up_length_is_one_of_two_fields():
    ref = cfg_with("reference", "optim", "warmup_frac", 0.2)  # an explicit fraction replaces the mode's epochs
    assert ref.optim.warmup_frac == 0.2 and ref.optim.warmup_epochs is None
    clean = cfg_with("clean", "optim", "warmup_epochs", 5)
    assert clean.optim.warmup_epochs == 5 and clean.optim.warmup_frac is None
    with pytest.raises(ConfigError, match="only one"):
        TrainConfig.from_dict({"features": "-", "dataset": "-", "optim": {"warmup_frac": 0.1, "warmup_epochs": 3}})
    with pytest.raises(ConfigError, match="one must be set"):
        cfg_with("reference", "optim", "warmup_epochs", None)


# ------------------------------------------------------------------------------------- probe
def test_dpt_residual_unit_skip_adds_relu_in_reference_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6)
    for skip_relu in (False, True):
        unit = ResidualConvUnit(3, skip_relu=skip_relu)
        a, b = unit.conv1, unit.conv2
        branch = F.conv2d(F.relu(F.conv2d(F.relu(x), a.weight, a.bias, padding=1)), b.weight, b.bias, padding=1)
        want = (F.relu(x) if skip_relu else x) + branch
        assert torch.allclose(unit(x), want, atol=1e-6)
    ref = Probe(ProbeConfig.preset("tiny", compat="reference", in_channels=8))
    clean = Probe(ProbeConfig.preset("tiny", in_channels=8))
    units = [m for m in ref.modules() if isinstance(m, ResidualConvUnit)]
    assert len(units) == 2 * 7 and all(u.skip_relu for u in units)  # 2 heads x (2 + 2 + 2 + 1) units
    assert not any(u.skip_relu for u in clean.modules() if isinstance(u, ResidualConvUnit))


def test_tokens_start_at_std_1e6_in_reference_mode():
    torch.manual_seed(0)
    for compat, std in (("reference", 1e-6), ("clean", 0.02)):
        m = Probe(ProbeConfig.preset("small", compat=compat, in_channels=8))
        vals = torch.cat([m.camera_token.flatten(), m.register_tokens.flatten()]).detach()
        assert vals.numel() == 2 * 5 * 512
        assert 0.9 * std < float(vals.std()) < 1.1 * std, (compat, float(vals.std()))


@pytest.mark.parametrize("preset", ["reference", "small", "tiny"])
def test_reference_presets_keep_16_heads(preset):
    ref = ProbeConfig.preset(preset, compat="reference", in_channels=8)
    clean = ProbeConfig.preset(preset, in_channels=8)
    assert ref.num_heads == 16 and ref.camera_heads == 16
    assert ref.width == clean.width and ref.dpt_features == clean.dpt_features  # only the heads change
    assert clean.num_heads == {"reference": 16, "small": 8, "tiny": 4}[preset]
    with torch.device("meta"):
        m = Probe(ref)
    assert m.frame_blocks[0].attn.num_heads == 16 and m.camera_head.trunk[0].attn.num_heads == 16
    assert m.frame_blocks[0].attn.q_norm.weight.shape == (ref.width // 16,)
    assert ProbeConfig.preset(preset, compat="reference", in_channels=8, num_heads=8).num_heads == 8  # explicit wins


# ------------------------------------------------------------------------------------- losses
def _prepared(depth_gt, conf, points_gt=None, pose_gt=None):
    B, S, H, W = depth_gt.shape
    return {
        "points": points_gt if points_gt is not None else torch.zeros(B, S, H, W, 3),
        "depth": depth_gt, "valid": torch.ones(B, S, H, W, dtype=torch.bool), "confidence": conf,
        "pose_enc": pose_gt if pose_gt is not None else torch.zeros(B, S, 9),
    }


def test_dense_terms_are_clamped_at_100_before_and_after_the_confidence():
    g = torch.tensor([1.0, 150.0, 2.0, 3.0, 1.0, 1.0]).reshape(1, 2, 1, 3)
    c = torch.tensor([1.0, 1.0, 80.0, 1.0, 2.0, 1.0]).reshape(1, 2, 1, 3)
    pred = {"depth": torch.zeros(1, 2, 1, 3)}
    ref = LossConfig(**mode_defaults("loss", "reference"))
    _, t = probe_loss(pred, _prepared(g, c), cfg=ref, prepared=True)
    # |d - g| = [1, 150, 2, 3, 1, 1] -> clamp 100 -> x c = [1, 100, 160, 3, 2, 1] -> clamp 100 -> mean
    assert float(t["depth"]) == pytest.approx((1 + 100 + 100 + 3 + 2 + 1) / 6)
    _, t = probe_loss(pred, _prepared(g, c), cfg=LossConfig(), prepared=True)
    assert float(t["depth"]) == pytest.approx((1 + 150 + 160 + 3 + 2 + 1) / 6)


def test_camera_huber_elements_are_clamped_at_100():
    gt = torch.zeros(1, 2, 9)
    gt[0, 1, :3] = torch.tensor([150.0, 0.5, -2.0])  # Huber(150) = 149.5 -> 100; 0.125; 1.5
    gt[0, 1, 3] = 300.0  # quaternion element: 299.5 -> 100
    pred = {"pose_enc_list": [torch.zeros(1, 2, 9)]}
    ref = LossConfig(**mode_defaults("loss", "reference"))
    _, t = probe_loss(pred, _prepared(torch.ones(1, 2, 1, 1), torch.ones(1, 2, 1, 1), pose_gt=gt), cfg=ref, prepared=True)
    assert float(t["camera_T"]) == pytest.approx((100 + 0.125 + 1.5) / 6)
    assert float(t["camera_R"]) == pytest.approx(100 / 8)
    _, t = probe_loss(pred, _prepared(torch.ones(1, 2, 1, 1), torch.ones(1, 2, 1, 1), pose_gt=gt), prepared=True)
    assert float(t["camera_T"]) == pytest.approx((149.5 + 0.125 + 1.5) / 6)


def test_point_normaliser_is_count_plus_1e3_clamped_to_1e3():
    # prediction: mean distance 5000 (clamped to 1e3 in reference mode); GT: mean distance 2
    n = 4
    p = torch.zeros(1, 1, 1, n, 3)
    p[..., 2] = torch.tensor([4000.0, 6000.0, 5000.0, 5000.0])
    g = torch.zeros(1, 1, 1, n, 3)
    g[..., 0] = torch.tensor([1.0, 3.0, 2.0, 2.0])
    c = torch.ones(1, 1, 1, n)
    pred = {"points": p}
    tgt = _prepared(torch.ones(1, 1, 1, n), c, points_gt=g)

    def expected(sp, sg):
        return float(((p / sp - g / sg).norm(dim=-1)).clamp(max=100).mean())

    ref = LossConfig(**mode_defaults("loss", "reference"))
    _, t = probe_loss(pred, tgt, cfg=ref, prepared=True)
    assert float(t["points"]) == pytest.approx(expected(min(20000 / (n + 1e-3), 1e3), 8 / (n + 1e-3)), rel=1e-6)
    _, t = probe_loss(pred, tgt, cfg=LossConfig(), prepared=True)
    assert float(t["points"]) == pytest.approx(expected(5000.0, 2.0), rel=1e-6)


def _clip(dists0, valid0):
    """One clip, 2 frames of 1x4 pixels, identity cameras; frame 0's points on the z axis at ``dists0``."""
    pts = torch.zeros(1, 2, 1, 4, 3)
    pts[0, 0, 0, :, 2] = torch.tensor(dists0)
    pts[0, 1, 0, :, 2] = 7.0
    ext = torch.eye(3, 4).expand(1, 2, 3, 4).clone()
    K = torch.tensor([[10.0, 0, 2], [0, 10.0, 0.5], [0, 0, 1]]).expand(1, 2, 3, 3).clone()
    valid = torch.ones(1, 2, 1, 4, dtype=torch.bool)
    valid[0, 0] = torch.tensor(valid0)
    return {"points": pts, "depth": pts[..., 2].clone(), "valid": valid, "extrinsics": ext, "intrinsics": K}


def test_ground_truth_scale_is_over_all_pixels_of_frame_0():
    gt = _clip([2.0, 4.0, 9.0, 9.0], [True, True, False, False])
    ref = LossConfig(**mode_defaults("loss", "reference"))
    # every pixel counts, the two invalid ones at distance 0: (2 + 4 + 0 + 0) / 4
    assert float(targets_for(gt, ref)["scale"][0]) == pytest.approx(1.5)
    assert float(prepare_targets(gt)["scale"][0]) == pytest.approx(3.0)  # clean: the valid ones, (2 + 4) / 2


@pytest.mark.parametrize("d", [2.0e4, 5.0e-4])
def test_ground_truth_outside_1e3_1e4_is_not_rescaled(d):
    gt = _clip([d] * 4, [True] * 4)
    ref = LossConfig(**mode_defaults("loss", "reference"))
    tgt = targets_for(gt, ref)
    assert float(tgt["scale"][0]) == 1.0 and float(tgt["depth"][0, 0, 0, 0]) == pytest.approx(d)
    assert float(prepare_targets(gt)["scale"][0]) == pytest.approx(d)  # clean rescales every clip
    inside = targets_for(_clip([2.0e3] * 4, [True] * 4), ref)
    assert float(inside["scale"][0]) == pytest.approx(2.0e3)


# ------------------------------------------------------------------------------------- optimiser
def test_weight_decay_on_every_parameter_in_reference_mode():
    model = Probe(ProbeConfig.preset("tiny", compat="reference", in_channels=8))
    ref = build_optimizer(model, cfg_with("reference").optim)
    assert len(ref.param_groups) == 1 and ref.param_groups[0]["weight_decay"] == 0.05
    assert len(ref.param_groups[0]["params"]) == len(list(model.parameters()))
    clean = build_optimizer(model, cfg_with("clean").optim)
    exempt = {id(p) for g in clean.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for n, p in model.named_parameters():
        assert (id(p) in exempt) == (p.ndim < 2 or "token" in n or "norm" in n), n
    assert cfg_with("reference").optim.grad_clip == 0 and cfg_with("clean").optim.grad_clip == 1.0


@pytest.mark.parametrize("epochs,total", [(75, 750), (75, 80), (100, 1000), (100, 37)])
def test_warm_up_from_zero_then_cosine(epochs, total):
    base, low = 1e-4, 1e-6
    o = TrainConfig(compat="reference", epochs=epochs).optim
    W = int(10 * total / epochs)  # configure_optimizers: int(warmup_epochs * total_steps / max_epochs)
    assert warmup_steps(total, o, epochs) == W
    f = lr_schedule(total, o, epochs)
    lr = [base * f(s) for s in range(total + 1)]
    want = [s * base / (W - 1) if s < W else low + 0.5 * (base - low) * (1 + math.cos(math.pi * (s - W) / (total - W)))
            for s in range(total + 1)]
    assert lr[0] == 0.0 and lr[W - 1] == pytest.approx(base) and lr[W] == pytest.approx(base)
    assert lr == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert lr[-1] == pytest.approx(low)
    c = TrainConfig(epochs=epochs).optim  # clean: (s + 1) / W' with W' = round(10/75 total)
    g = lr_schedule(total, c, epochs)
    Wc = max(1, round(total * 10 / 75))
    assert g(0) == pytest.approx(1 / Wc) and g(Wc - 1) == pytest.approx(1.0)


def test_steps_per_epoch_drop_the_last_partial_batch():
    assert steps_in_epoch(23, 10, drop_last=True) == 2 and steps_in_epoch(23, 10, drop_last=False) == 3
    assert steps_in_epoch(20, 10, drop_last=True) == 2 == steps_in_epoch(20, 10, drop_last=False)
    with pytest.raises(ConfigError, match="drop_last"):
        steps_in_epoch(5, 10, drop_last=True)


# ------------------------------------------------------------------------------------- frames
def release_draw_distribution(n: int = 4, gap: int = 5, window: int = 76, snap: int = 4) -> dict[tuple, float]:
    """Exact distribution of the release's draw: n-1 cut points in [0, slack], sorted; gaps then floor."""
    slack = window - 1 - (n - 1) * gap
    dist: Counter = Counter()
    for cuts in itertools.product(range(slack + 1), repeat=n - 1):
        c = sorted(cuts)
        parts = [c[0]] + [c[i] - c[i - 1] for i in range(1, n - 1)]
        raw = [0]
        for e in parts:
            raw.append(raw[-1] + gap + e)
        dist[tuple(0 if f == 0 else (f - 1) // snap * snap + 1 for f in raw)] += 1
    total = (slack + 1) ** (n - 1)
    return {k: v / total for k, v in dist.items()}


def test_release_frames_have_raw_gaps_then_floor():
    exact = release_draw_distribution()
    p_gap4 = sum(p for fr, p in exact.items() if min(b - a for a, b in zip(fr, fr[1:])) == 4)
    print(f"release draws with a snapped gap of 4: {p_gap4:.4f}")
    assert 0.08 < p_gap4 < 0.12  # "about 10% of the draws"
    s = FrameSampler(method="gaps_then_floor")
    rng = random.Random(0)
    draws = [tuple(s.sample(81, rng)) for _ in range(6000)]
    assert set(draws) <= set(exact)  # only sets the rule can make
    emp_gap4 = sum(min(b - a for a, b in zip(d, d[1:])) == 4 for d in draws) / len(draws)
    assert abs(emp_gap4 - p_gap4) < 4 * math.sqrt(p_gap4 * (1 - p_gap4) / len(draws))
    for i in range(1, 4):  # each frame's marginal CDF within the DKW band (alpha 1e-6)
        frames = sorted({fr[i] for fr in exact})
        for f in frames:
            cdf = sum(p for fr, p in exact.items() if fr[i] <= f)
            emp = sum(d[i] <= f for d in draws) / len(draws)
            assert abs(cdf - emp) < math.sqrt(math.log(2e6) / (2 * len(draws))), (i, f)
    # vidprobe's own rule never produces a snapped gap below 5
    u = FrameSampler()
    assert all(min(b - a for a, b in zip(d, d[1:])) >= 5 for d in (u.sample(81, rng) for _ in range(500)))


def test_evaluation_frames_are_fixed_per_scene_in_both_methods():
    exact = release_draw_distribution()
    for method in ("uniform", "gaps_then_floor"):
        s = FrameSampler(method=method)
        a = [s.eval_frames(f"scene{i}", 81, seed=0) for i in range(20)]
        assert a == [s.eval_frames(f"scene{i}", 81, seed=0) for i in range(20)]  # the same every pass
        assert len({tuple(x) for x in a}) > 10  # and not one draw for every scene
        if method == "gaps_then_floor":
            assert all(tuple(x) in exact for x in a)
    assert cfg_with("reference").sampler.method == "gaps_then_floor"
