"""Reference mode against the study's release: probe, ground truth, losses, optimiser steps, lr schedule.

The golden fixture ``tests/fixtures/parity/probe.safetensors`` was made by running the release's own code
(zxhuang1698/VidFM3D: ``ProbeModelPA``, ``invert_pose_ref_and_scale``, ``point_loss`` / ``depth_loss`` /
``camera_loss``, AdamW + pl_bolts' ``LinearWarmupCosineAnnealingLR``) with ``tools/parity/probe.py``; its
metadata says how. Here the release's weights go through vidprobe's own key mapping into vidprobe's
``Probe`` built in ``compat: reference`` mode, and everything the release computed is computed again by
vidprobe's code and compared (1e-5 relative, fp32). Clean mode is shown to differ where it should.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vidprobe.data.sampling import FrameSampler
from vidprobe.probe.config import ProbeConfig
from vidprobe.probe.losses import LossConfig, prepare_targets, probe_loss, targets_for
from vidprobe.probe.model import Probe, from_release_state_dict, release_key
from vidprobe.probe.train import OptimConfig, TrainConfig, build_optimizer, lr_schedule

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "probe.safetensors"
RTOL = 1e-5


@pytest.fixture(scope="module")
def fx():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return load_file(str(FIXTURE)), meta, json.loads(meta["config"])


def close(ours: torch.Tensor, ref: torch.Tensor, name: str, rtol: float = RTOL) -> None:
    """Relative agreement: |ours - ref| <= rtol |ref| + rtol max|ref| everywhere."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs the release's {tuple(ref.shape)}"
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.abs().max()), msg=lambda m: f"{name}: {m}")


def probe_config(c: dict, compat: str, **kw) -> ProbeConfig:
    """The fixture's tiny release probe as a vidprobe config (sizes only; the mode gives the rest)."""
    return ProbeConfig.preset(
        "tiny", compat=compat, in_channels=c["video_channels"], width=c["embed_dim"], depth=c["backbone_depth"],
        mlp_ratio=c["mlp_ratio"], dpt_features=c["dpt_dim"], dpt_out_channels=tuple(c["dpt_stage_channels"]),
        dpt_last_hidden=32, dpt_layers=tuple(c["dpt_intermediate_layer_idx"]), camera_depth=c["camera_trunk_depth"],
        camera_iters=c["camera_iters"], out_hw=tuple(c["out_hw"]), **kw,
    )


def release_weights(t: dict) -> dict[str, torch.Tensor]:
    return {k[len("weight."):]: v for k, v in t.items() if k.startswith("weight.")}


def probe_from_fixture(t: dict, c: dict, compat: str = "reference", **kw) -> Probe:
    model = Probe(probe_config(c, compat, **kw))
    model.load_state_dict(from_release_state_dict(release_weights(t)), strict=True)
    return model.eval()


def raw_gt(t: dict) -> dict[str, torch.Tensor]:
    gt = {k[len("in.gt."):]: v for k, v in t.items() if k.startswith("in.gt.")}
    gt["valid"] = torch.ones_like(gt["depth"], dtype=torch.bool)  # VGGT labels: every pixel
    return gt


def release_predictions(t: dict, c: dict) -> dict[str, torch.Tensor]:
    poses = [t[f"out.pose_enc.{i}"] for i in range(c["camera_iters"])]
    return {"points": t["out.world_points"], "points_conf": t["out.world_points_conf"], "depth": t["out.depth"],
            "depth_conf": t["out.depth_conf"], "pose_enc": poses[-1], "pose_enc_list": poses}


def reference_loss_config() -> LossConfig:
    return LossConfig.from_dict(TrainConfig(compat="reference").loss)


def test_fixture_records_its_origin(fx):
    t, meta, c = fx
    assert meta["upstream_repo"] == "zxhuang1698/VidFM3D" and len(meta["upstream_commit"]) == 40
    assert "ProbeModelPA" in meta["modules"] and "substitutions" in meta
    assert FIXTURE.stat().st_size < 2_000_000
    assert c["num_heads"] == 16 and c["dpt_intermediate_layer_idx"] == [1, 0, 1, 1]


def test_release_keys_map_one_to_one(fx):
    t, _, c = fx
    rel = release_weights(t)
    mapped = from_release_state_dict(rel)
    model = Probe(probe_config(c, "reference"))
    ours = model.state_dict()
    assert len(mapped) == len(rel)  # every release key used exactly once
    assert set(mapped) == set(ours), (sorted(set(ours) - set(mapped))[:5], sorted(set(mapped) - set(ours))[:5])
    for k, v in mapped.items():
        assert v.shape == ours[k].shape, k
    with pytest.raises(KeyError, match="no vidprobe key"):
        release_key("backbone.mask_tokenizer.proj.weight")


def test_forward_matches_the_release(fx):
    t, _, c = fx
    model = probe_from_fixture(t, c)
    feats = t["in.features"]
    with torch.no_grad():
        blocks = model.aggregate(feats)
        out = model(feats)
    assert len(blocks) == c["backbone_depth"]
    for i, b in enumerate(blocks):
        close(b, t[f"out.block.{i}"], f"block {i}")
    assert len(out["pose_enc_list"]) == c["camera_iters"]
    for i, p in enumerate(out["pose_enc_list"]):
        close(p, t[f"out.pose_enc.{i}"], f"pose_enc iteration {i}")
    close(out["depth"], t["out.depth"], "depth")
    close(out["depth_conf"], t["out.depth_conf"], "depth_conf")
    close(out["points"], t["out.world_points"], "world_points")
    close(out["points_conf"], t["out.world_points_conf"], "world_points_conf")


def test_clean_mode_differs_by_the_dpt_skip(fx):
    """Same weights, same heads; clean's residual units add x instead of relu(x): the dense outputs move."""
    t, _, c = fx
    model = probe_from_fixture(t, c, "clean", num_heads=16, camera_num_heads=16)
    assert not model.config.dpt_skip_relu
    with torch.no_grad():
        out = model(t["in.features"])
    close(out["pose_enc"], t["out.pose_enc.3"], "pose_enc (no DPT on this path)")
    for k, ref in (("depth", "out.depth"), ("points", "out.world_points")):
        with pytest.raises(AssertionError):
            close(out[k], t[ref], k)


def test_ground_truth_preparation_matches_the_release(fx):
    t, _, c = fx
    tgt = targets_for(raw_gt(t), reference_loss_config(), tuple(c["out_hw"]))
    close(tgt["points"], t["target.points"], "rebased, scaled points")
    close(tgt["depth"], t["target.depth"], "scaled depth")
    close(tgt["extrinsics"], t["target.extrinsics"], "rebased, scaled extrinsics")


def test_a_clip_outside_the_scale_range_is_not_rescaled(fx):
    """The release's function returns such a clip rebased but unscaled (its caller then cannot unpack it)."""
    t, meta, _ = fx
    assert "ValueError" in meta["far_clip"]
    gt = {k: v[:1] for k, v in raw_gt(t).items()}
    gt["points"] = t["in.gt.points"][:1] * 1.0e5  # as the generator made it
    cfg = reference_loss_config()
    tgt = targets_for(gt, cfg)
    assert float(tgt["scale"][0]) == 1.0
    close(tgt["points"][0], t["target.far.points"], "unscaled far clip")
    close(tgt["extrinsics"][0], t["target.far.extrinsics"], "unscaled far extrinsics")
    clean = prepare_targets(gt)  # clean: always rescaled to unit mean distance
    assert float(clean["scale"][0]) > 1e4


@pytest.mark.parametrize("source", ["release predictions", "vidprobe predictions"])
def test_losses_match_the_release(fx, source):
    t, _, c = fx
    if source == "release predictions":
        pred = release_predictions(t, c)
    else:
        with torch.no_grad():
            pred = probe_from_fixture(t, c)(t["in.features"])
    cfg = reference_loss_config()
    _, terms = probe_loss(pred, raw_gt(t), tuple(c["out_hw"]), cfg)
    for k in ("points", "depth", "camera", "camera_T", "camera_R", "camera_fov", "total"):
        close(terms[k], t[f"loss.{k}"][0], f"loss {k}")
    # the fixture's outliers make every clamp matter: without them the dense and camera terms move
    _, unclamped = probe_loss(pred, raw_gt(t), tuple(c["out_hw"]), LossConfig.from_dict({**cfg.to_dict(), "clamp": None}))
    for k in ("points", "depth", "camera_T"):
        rel = abs(float(unclamped[k]) - float(t[f"loss.{k}"][0])) / float(t[f"loss.{k}"][0])
        assert rel > 1e-2, f"clamp inactive for {k} ({rel:.2e})"


def test_optimizer_steps_match_the_release(fx):
    t, meta, c = fx
    sc = c["step_schedule"]
    model = probe_from_fixture(t, c).train()
    tc = TrainConfig(compat="reference", optim=OptimConfig(lr=c["lr"]), epochs=sc["max_epochs"])
    assert tc.optim.decay_all and tc.optim.grad_clip == 0 and tc.optim.warmup_epochs == c["warmup_epochs"]
    opt = build_optimizer(model, tc.optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(sc["total"], tc.optim, tc.epochs))
    loss_cfg = LossConfig.from_dict(tc.loss)
    names = [release_key(n) for n in json.loads(meta["parameter_order"])]
    params = dict(model.named_parameters())
    lrs = []
    for step in range(2):
        loss, _ = probe_loss(model(t["in.features"]), raw_gt(t), tuple(c["out_hw"]), loss_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            norms = torch.stack([params[n].grad.norm() for n in names])
            close(norms, t["grad.norms"], "per-parameter gradient norms", rtol=1e-4)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0  # the release's warm-up starts at lr 0
    close(torch.tensor(lrs, dtype=torch.float64), t["step.lrs"], "lr of the two steps", rtol=1e-12)
    sd = model.state_dict()
    for k in json.loads(meta["step_keys"]):
        close(sd[release_key(k)].reshape(t[f"step2.{k}"].shape), t[f"step2.{k}"], f"{k} after two steps")


def test_clean_optimizer_differs_by_the_decay_exemptions(fx):
    t, meta, c = fx
    sc = c["step_schedule"]
    model = probe_from_fixture(t, c).train()
    ref = TrainConfig(compat="reference", optim=OptimConfig(lr=c["lr"]), epochs=sc["max_epochs"]).optim
    clean = OptimConfig(**{**ref.__dict__, "decay_all": False})
    opt = build_optimizer(model, clean)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(sc["total"], clean, sc["max_epochs"]))
    loss_cfg = reference_loss_config()
    for _ in range(2):
        loss, _ = probe_loss(model(t["in.features"]), raw_gt(t), tuple(c["out_hw"]), loss_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    k = "backbone.input_proj.0.weight"  # a LayerNorm weight: decayed in the release, exempt in clean mode
    with pytest.raises(AssertionError):
        close(model.state_dict()[release_key(k)], t[f"step2.{k}"], k)


def test_lr_schedules_match_the_release(fx):
    t, _, c = fx
    for total, max_epochs in c["lr_schedules"]:
        o = TrainConfig(compat="reference", optim=OptimConfig(lr=c["lr"]), epochs=max_epochs).optim
        f = lr_schedule(total, o, max_epochs)
        ours = torch.tensor([c["lr"] * f(s) for s in range(total + 1)], dtype=torch.float64)
        ref = t[f"lr.{total}_{max_epochs}"]
        close(ours, ref, f"lr over {total} steps ({max_epochs} epochs)", rtol=1e-12)
        clean = TrainConfig(optim=OptimConfig(lr=c["lr"]), epochs=max_epochs).optim
        g = lr_schedule(total, clean, max_epochs)
        with pytest.raises(AssertionError):
            close(torch.tensor([c["lr"] * g(s) for s in range(total + 1)], dtype=torch.float64), ref, "clean lr")


class GivenCuts(random.Random):
    """A ``random.Random`` whose ``randint`` returns the given cut points in turn (the release's draws)."""

    def __init__(self, cuts):
        super().__init__(0)
        self.cuts = list(cuts)

    def randint(self, a, b):
        v = self.cuts.pop(0)
        assert a <= v <= b
        return v


def test_frame_draw_maps_cut_points_as_the_release(fx):
    t, _, _ = fx
    sampler = TrainConfig(compat="reference").sampler
    s = FrameSampler(**sampler.__dict__)
    cuts, want = t["sampler.cuts"].tolist(), t["sampler.frames"].tolist()
    assert len(cuts) > 300
    for c, w in zip(cuts, want):
        assert s.sample(81, GivenCuts(c)) == w, c
        assert s.sample(81, GivenCuts(c[::-1])) == w, c  # the cut points are sorted: their order is irrelevant
    gaps = [b - a for w in want for a, b in zip(w, w[1:])]
    assert min(gaps) == 4  # snapped gaps of 4 occur in the release's draws (never in the uniform method)


def test_the_comparison_catches_a_perturbed_output(fx):
    t, _, c = fx
    with torch.no_grad():
        out = probe_from_fixture(t, c)(t["in.features"])
    for k, ref in (("depth", "out.depth"), ("points_conf", "out.world_points_conf"), ("pose_enc", "out.pose_enc.3")):
        close(out[k], t[ref], k)
        bad = t[ref].clone()
        bad.view(-1)[bad.numel() // 2] *= 1 + 1e-3
        with pytest.raises(AssertionError):
            close(out[k], bad, k)
