"""`vidprobe plan`: store sizes from the feature shapes, the sweep's preflight refusal and its override, and the
memory model (a meta trace, :mod:`vidprobe.pipeline.plan_memory`) against the CPU allocator's measured peaks."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from vidprobe.cli import app  # noqa: E402
from vidprobe.pipeline import plan as plan_mod  # noqa: E402
from vidprobe.pipeline import sweep as sweep_mod  # noqa: E402
from vidprobe.pipeline.plan import FILE_OVERHEAD, human, preflight  # noqa: E402
from vidprobe.pipeline.plan_memory import measured_cpu_peak, module_bytes, state_bytes, train_step  # noqa: E402
from vidprobe.pipeline.plan_meta import trace_extraction  # noqa: E402

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ------------------------------------------------------------------------------------------ sizes
def test_wan_store_sizes_are_the_feature_shapes():
    """WAN2.1-1.3B at 81 frames 832x480: 21 x 30 x 52 maps of C = 1536 (protocol.md), fp16 = N h w C x 2 bytes."""
    r = _invoke("plan", PAPER / "wan2.1-t2v-1.3b_co3d.yaml", "--videos", 1000, "--json", "--no-training-memory")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    e = d["entries"][0]
    N, h, w, C, T = 21, 30, 52, 1536, 81
    assert e["grid"] == [N, h, w, C]
    extra = 8 * T + FILE_OVERHEAD  # frame_index int64 + the header
    assert e["sizes"]["fp16"] == [N * h * w * C * 2 + extra, 0]
    assert e["sizes"]["int8"] == [N * h * w * C + 8 * C + extra, 0]  # + a float32 scale and offset per channel
    assert e["sizes"]["pca:256"] == [N * h * w * 256 * 2 + extra, 4 * (C * 256 + C)]  # + one basis per key
    assert e["sizes"]["pca:256+int8"] == [N * h * w * 256 + 8 * 256 + extra, 4 * (C * 256 + C)]
    assert e["store_bytes"]["fp16"] == 1000 * (N * h * w * C * 2 + extra) == d["store_bytes"]["fp16"]
    # one hooked denoiser pass per video and timestep, stopped after block 21 of 30
    assert (e["passes_per_video"], e["vae_per_video"], e["deepest"], e["num_layers"]) == (1, 1, 21, 30)
    from vidprobe.backbones import fullsize as fs

    tr = fs.on_meta(diffusers.WanTransformer3DModel, **fs.fullsize("wan2.1-t2v-1.3b", "transformer"))
    vae = fs.on_meta(diffusers.AutoencoderKLWan, **fs.fullsize("wan2.1-t2v-1.3b", "vae"))
    assert e["params"] == module_bytes(tr, vae)[0]
    assert e["param_bytes"] == 4 * e["params"]  # the paper config runs WAN in fp32
    # 1000 videos -> 900 train (9:1); batch 10, last partial batch dropped: 90 steps x 75 epochs
    assert d["train_videos"] == 900 and d["train_steps"] == 90 * 75 == e["train_steps"]

    r = _invoke("plan", PAPER / "wan2.1-t2v-1.3b_co3d.yaml", "--videos", 1000, "--no-training-memory")
    assert r.exit_code == 0, r.output
    assert "21x30x52x1536" in r.stdout and human(1000 * (N * h * w * C * 2 + extra)) in r.stdout


# ------------------------------------------------------------------------------------------ preflight
@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("plan")
    data = write_synthetic_dataset(root / "data", 4, num_frames=9, hw=(28, 56), progress=False, test_fraction=0.25)
    cfg = {"dataset": str(data), "out": str(root / "out"),
           "grid": {"backbones": [{"name": "dinov2-small", "kwargs": {"tiny": True, "height": 28, "width": 56},
                                   "layers": [2]}], "presets": ["tiny"], "seeds": [1]},
           "train": {"epochs": 1, "max_steps": 2, "batch_size": 2, "out_hw": [14, 28], "device": "cpu",
                     "probe": {"depth": 1, "camera_depth": 1, "camera_iters": 1},
                     "sampler": {"num_frames": 2, "min_gap": 1, "max_frame": 9, "snap": 1}}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _no_sweep(monkeypatch) -> list:
    ran: list = []
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda cfg, **kw: ran.append(cfg) or sweep_mod.SweepSummary())
    return ran


def test_sweep_refuses_when_the_disk_is_too_small(tiny_sweep, monkeypatch):
    ran = _no_sweep(monkeypatch)
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - 1000, 1000))
    r = _invoke("sweep", tiny_sweep)
    assert r.exit_code == 2, r.output
    assert not ran and not (tiny_sweep.parent / "out").exists()  # nothing started
    pf = preflight(sweep_mod.load_sweep(tiny_sweep))  # the same plan (cached traces): the numbers printed
    assert pf.problems and pf.problems[0].startswith("disk:")
    assert f"the sweep writes {human(pf.needed_disk)}" in r.stderr and "has 1000 B free" in r.stderr
    assert human(pf.plan.store_bytes("fp16")) in r.stdout  # the plan's table came first
    assert pf.needed_disk == pf.plan.store_bytes("fp16") + pf.plan.checkpoints_bytes > 0
    assert "--no-plan-check" in r.stderr


def test_sweep_refuses_when_the_device_memory_is_too_small(tiny_sweep, monkeypatch):
    ran = _no_sweep(monkeypatch)
    monkeypatch.setattr(plan_mod, "device_free", lambda device: ("cpu (available RAM)", 4096))
    r = _invoke("sweep", tiny_sweep)
    assert r.exit_code == 2 and not ran, r.output
    e = preflight(sweep_mod.load_sweep(tiny_sweep)).plan.entries[0]
    assert f"extracting dinov2-small needs {human(e.extract_peak)}" in r.stderr
    assert f"training a probe on dinov2-small (batch 2 x 2 frames, out 14x28, fp32) needs {human(e.train_peak)}" \
        in r.stderr
    assert "4.0 KiB free" in r.stderr


def test_no_plan_check_starts_anyway_and_a_fitting_sweep_starts(tiny_sweep, monkeypatch):
    ran = _no_sweep(monkeypatch)
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - 1000, 1000))

    def not_called(*a, **k):
        raise AssertionError("--no-plan-check must not plan")

    real = plan_mod.preflight
    monkeypatch.setattr(plan_mod, "preflight", not_called)
    r = _invoke("sweep", tiny_sweep, "--no-plan-check")
    assert r.exit_code == 0 and len(ran) == 1, r.output
    monkeypatch.setattr(plan_mod, "preflight", real)
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    r = _invoke("sweep", tiny_sweep)
    assert r.exit_code == 0 and len(ran) == 2, r.output
    assert "[plan] fits" in r.stdout


# ------------------------------------------------------------------------------------------ the memory model
@pytest.mark.parametrize("name,kwargs,frames,layers,timesteps", [
    ("wan2.1-t2v-1.3b", {"tiny": True, "height": 32, "width": 48}, 9, [2], [749]),  # VAE (3-D convs) + denoiser
    ("dinov2-small", {"tiny": True, "height": 28, "width": 56}, 8, [2], [None]),
])
def test_extraction_peak_matches_the_cpu_allocator(name, kwargs, frames, layers, timesteps):
    """The traced peak (parameters + activations) against a real CPU extraction, measured by the allocator."""
    from vidprobe.backbones.base import get_backbone

    hw = (kwargs["height"], kwargs["width"])
    tr = trace_extraction(name, kwargs, frames, layers, timesteps, native_hw=hw, device="cpu")
    bb = get_backbone(name, device="cpu", **kwargs)
    video = torch.rand(frames, 3, *hw, generator=torch.Generator().manual_seed(0))
    bb.extract(video, layers, timesteps)  # first-call allocations (caches) out of the way
    fs, act = measured_cpu_peak(lambda: bb.extract(video, layers, timesteps))
    params = module_bytes(*[m for m in vars(bb).values() if isinstance(m, torch.nn.Module)])[1]
    assert tr.param_bytes == params  # exactly
    assert tr.grid == tuple(next(iter(fs.maps.values())).shape)
    est_act = max(tr.encode_peak, tr.forward_peak)
    assert act > 0 and abs(est_act / act - 1) < 0.2, (est_act, act)
    assert abs(tr.peak() / (params + act) - 1) < 0.2, (tr.peak(), params + act)


@pytest.mark.parametrize("grad_checkpointing", [False, True])
def test_training_step_peak_matches_the_cpu_allocator(grad_checkpointing):
    """A probe step (the real loss, AdamW) traced on meta vs. the same step on the CPU: state exact, peak within 20%."""
    from vidprobe.probe.losses import probe_loss
    from vidprobe.probe.model import Probe
    from vidprobe.probe.schedule import build_optimizer
    from vidprobe.probe.train_config import TrainConfig

    B, S, h, w, C, (H, W) = 2, 2, 4, 7, 16, (14, 28)
    tc = TrainConfig.from_dict({"features": "-", "dataset": "-", "batch_size": B, "grad_checkpointing": grad_checkpointing,
                                "sampler": {"num_frames": S}, "probe": {"preset": "tiny", "depth": 1, "camera_depth": 1,
                                                                        "camera_iters": 1}})
    est = plan_mod.train_memory(tc, (S, h, w, C), (H, W), "cpu", bf16=False)

    torch.manual_seed(0)
    pcfg = tc.probe_config(C, (H, W))
    pcfg.grad_checkpointing = grad_checkpointing
    model = Probe(pcfg).train()
    opt = build_optimizer(model, tc.optim)
    lcfg = tc.loss_config()

    def batch():
        g = {"points": torch.rand(B, S, H, W, 3) + torch.tensor([0, 0, 1.0]), "depth": torch.rand(B, S, H, W) + 1,
             "valid": torch.ones(B, S, H, W, dtype=torch.bool), "confidence": torch.rand(B, S, H, W),
             "extrinsics": torch.eye(4)[:3].expand(B, S, 3, 4).contiguous(),
             "intrinsics": torch.tensor([[20.0, 0, 14], [0, 20, 7], [0, 0, 1]]).expand(B, S, 3, 3).contiguous(),
             "images": torch.rand(B, S, 3, H, W)}
        return torch.rand(B, S, h, w, C, dtype=torch.float16).float(), g

    def step():
        train_step(model, opt, batch, lambda pred, gt: probe_loss(pred, gt, (H, W), lcfg)[0],
                   grad_clip=tc.optim.grad_clip)

    step()  # the first step makes the gradients and the AdamW state
    params, grads, optim = state_bytes(model, opt)
    assert (est.params, est.grads, est.optimizer) == (params, grads, optim)  # exactly
    assert est.optimizer == 2 * est.params and est.param_count == sum(p.numel() for p in model.parameters())
    _, act = measured_cpu_peak(step)
    assert abs(est.activations / act - 1) < 0.2, (est.activations, act)
    assert abs(est.total / (params + grads + optim + act) - 1) < 0.2
