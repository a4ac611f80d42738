#!/usr/bin/env python
"""Golden fixture for the probe, its losses and its optimiser in ``compat: reference`` mode.

Run (never in CI)::

    /work/upenv/bin/python tools/parity/probe.py --upstream /work/up/probe-ref

``--upstream`` is a checkout of the study's release (zxhuang1698/VidFM3D). The
script imports the release's own code and runs it:

* the probe: ``vidfm3d.models.components.probe_pixalign.ProbeModelPA`` (all
  three heads) at a tiny config: width 64, 2 alternating blocks (16 heads, the
  release's fixed value), DPT heads with 8 features, stage channels
  [8, 8, 8, 8] reading blocks [1, 0, 1, 1]. To keep the fixture small two of
  its parts are rebuilt from the release's own classes with smaller arguments
  ``ProbeModelPA`` does not expose: ``.backbone`` = ``BackbonePA`` with MLP
  ratio 1 (ProbeModelPA leaves it at 4) and ``.camera_head`` = the release's
  ``CameraHead`` with a 1-block trunk and MLP ratio 1 (ProbeModelPA: 4 and 4).
  Every parameter is then re-drawn from a seeded generator (LayerScale
  U(0.5, 1), tokens N(0, 0.5^2), norms 1 + N(0, 0.1^2), biases N(0, 0.1^2),
  weights N(0, 1/fan_in)) so that every path matters;
* the ground truth: the release dataset's ``invert_pose_ref_and_scale``
  (rebase to frame 0, scale by the mean point distance of all pixels of
  frame 0), sample by sample, as ``VideoProbeDataset.__getitem__`` calls it;
  also on one clip whose frame-0 mean distance is above 1e4 (the function
  then returns the rebased, unscaled points and only two values, which its
  caller cannot unpack: recorded in the metadata);
* the losses: ``vidfm3d.utils.loss.point_loss`` / ``depth_loss`` /
  ``camera_loss`` called exactly as ``VideoProbeLitModule.model_step`` calls
  them for the experiment configs (normalize_pred/gt true, gradient_loss
  "grad" computed but weighted 0, Huber camera loss), on ground truth with
  outliers so that every clamp at 100 is active;
* the frame draw: ``VideoProbeDataset._sample_query_frames`` (4 views, min_view_interval 5, context_len 76)
  with its random cut points replaced by given ones (a stand-in for numpy's generator that returns them),
  on every edge case and 300 seeded cut tuples, then the ``query_idx_divisor=4`` flooring of
  ``__getitem__``: the map from cut points to frames, which vidprobe's ``gaps_then_floor`` must reproduce;
* the optimiser: ``torch.optim.AdamW(model.parameters(), lr, betas=(0.9,
  0.95), weight_decay=0.05)`` (configs/model/probe.yaml) with pl_bolts'
  ``LinearWarmupCosineAnnealingLR`` scaled as
  ``VideoProbeLitModule.configure_optimizers`` scales it (warm-up
  ``int(10 * total / max_epochs)`` steps, ``eta_min`` 1e-6); two optimiser
  steps on the total loss; the lr sequences of three short schedules.

pl_bolts (lightning-bolts 0.7.0) is loaded from its ``optimizers/lr_scheduler.py``
file alone with its ``under_review`` decorator replaced by the identity
(importing the package pulls in torchvision); ``vidfm3d.utils`` is entered
without running its ``__init__`` (which imports hydra/rich helpers not used
here). No numerical code is substituted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "probe.safetensors"
REPO = "zxhuang1698/VidFM3D"

CONFIG = {
    "video_channels": 24,
    "embed_dim": 64,
    "backbone_depth": 2,
    "num_heads": 16,
    "mlp_ratio": 1.0,
    "dpt_dim": 8,
    "dpt_stage_channels": [8, 8, 8, 8],
    "dpt_intermediate_layer_idx": [1, 0, 1, 1],
    "camera_trunk_depth": 1,
    "camera_iters": 4,
    "B": 2,
    "S": 4,
    "grid_hw": [2, 3],
    "out_hw": [18, 26],
    "lr": 1e-3,
    "betas": [0.9, 0.95],
    "weight_decay": 0.05,
    "warmup_epochs": 10,
    "eta_min": 1e-6,
    "step_schedule": {"total": 15, "max_epochs": 75},  # warm-up int(150 / 75) = 2 steps
    "lr_schedules": [[150, 75], [300, 100], [75, 75]],  # (total steps, max_epochs)
    "seed": 0,
}
# parameters whose values after the two optimiser steps are saved (small, with robust gradients)
STEP_KEYS = (
    "backbone.input_proj.0.weight",
    "backbone.input_proj.1.bias",
    "backbone.camera_token",
    "backbone.register_token",
    "camera_head.empty_pose_tokens",
    "camera_head.token_norm.weight",
    "point_head.scratch.output_conv2.2.weight",
    "depth_head.scratch.refinenet4.out_conv.bias",
)


def import_release(upstream: Path):
    sys.path.insert(0, str(upstream))
    pkg = types.ModuleType("vidfm3d.utils")  # skip vidfm3d/utils/__init__.py (hydra / rich helpers)
    pkg.__path__ = [str(upstream / "vidfm3d" / "utils")]
    sys.modules["vidfm3d.utils"] = pkg
    from vidfm3d.data.components import video_probe_dataset as ds
    from vidfm3d.models.components import backbone_pixalign, probe_pixalign
    from vidfm3d.utils import loss
    from vidfm3d.vggt.heads import camera_head

    return probe_pixalign, backbone_pixalign, camera_head, loss, ds


def import_scheduler():
    spec0 = importlib.util.find_spec("pl_bolts")  # finds the package without running its __init__
    path = Path(spec0.origin).parent / "optimizers" / "lr_scheduler.py"
    stab = types.ModuleType("pl_bolts.utils.stability")
    stab.under_review = lambda *a, **k: (lambda obj: obj)
    sys.modules["pl_bolts.utils.stability"] = stab
    spec = importlib.util.spec_from_file_location("release_lr_scheduler", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LinearWarmupCosineAnnealingLR


def build_model(probe_pixalign, backbone_pixalign, camera_head):
    c = CONFIG
    model = probe_pixalign.ProbeModelPA(
        video_channels=c["video_channels"], embed_dim=c["embed_dim"], backbone_depth=c["backbone_depth"],
        gradient_checkpointing=False, dpt_dim=c["dpt_dim"], dpt_stage_channels=list(c["dpt_stage_channels"]),
        dpt_intermediate_layer_idx=list(c["dpt_intermediate_layer_idx"]), active_heads=["depth", "point", "camera"],
    )
    model.backbone = backbone_pixalign.BackbonePA(
        in_channels=c["video_channels"], embed_dim=c["embed_dim"], depth=c["backbone_depth"], mlp_ratio=c["mlp_ratio"]
    )
    model.camera_head = camera_head.CameraHead(
        dim_in=2 * c["embed_dim"], trunk_depth=c["camera_trunk_depth"], mlp_ratio=c["mlp_ratio"]
    )
    redraw(model, torch.Generator().manual_seed(c["seed"]))
    return model.eval()


def redraw(model: torch.nn.Module, g: torch.Generator) -> None:
    """Seeded values for every parameter, in state-dict order, so that every path matters."""
    owners = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = m
    with torch.no_grad():
        for name, p in model.named_parameters():
            m = owners[name]
            n = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            elif "token" in name.split(".")[-1]:
                p.copy_(0.5 * n)
            elif isinstance(m, torch.nn.LayerNorm) and name.endswith("weight"):
                p.copy_(1 + 0.1 * n)
            elif name.endswith("bias") or p.dim() == 1:
                p.copy_(0.1 * n)
            else:
                fan_in = p.shape[0] if isinstance(m, torch.nn.ConvTranspose2d) else p[0].numel()
                p.copy_(n / fan_in**0.5)


def rotation(g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def make_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    """Features and raw (world-frame) ground truth with outliers for every clamp."""
    c = CONFIG
    B, S = c["B"], c["S"]
    h, w = c["grid_hw"]
    H, W = c["out_hw"]
    feats = torch.randn(B, S, h, w, c["video_channels"], generator=g)
    ext = torch.zeros(B, S, 3, 4)
    for b in range(B):
        for s in range(S):
            ext[b, s, :, :3] = rotation(g)
            ext[b, s, :, 3] = torch.randn(3, generator=g) * 2.0
    ext[1, 3, :, 3] += torch.tensor([900.0, -300.0, 50.0])  # a far camera: Huber T elements > 100
    K = torch.zeros(B, S, 3, 3)
    K[..., 0, 0] = 30 + 5 * torch.rand(B, S, generator=g)
    K[..., 1, 1] = 28 + 5 * torch.rand(B, S, generator=g)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2, H / 2, 1.0
    points = torch.randn(B, S, H, W, 3, generator=g) * 2.0 + torch.tensor([0.0, 0.0, 4.0])
    points[0, 2, 5, 7] = torch.tensor([4.0e5, -2.0e5, 1.0e5])  # a far point: normalised error > 100
    depth = 0.5 + 3.0 * torch.rand(B, S, H, W, generator=g)
    depth[1, 1, 3:5, 10:12] = 2500.0  # far depths: |d - d_gt| > 100 after scaling
    conf = 1.0 + 80.0 * torch.rand(B, S, H, W, generator=g) ** 4  # some c * e > 100
    return {"features": feats, "gt.extrinsics": ext, "gt.intrinsics": K, "gt.points": points, "gt.depth": depth,
            "gt.confidence": conf}


def release_targets(ds, inp: dict) -> dict[str, torch.Tensor]:
    """``invert_pose_ref_and_scale`` per sample, as the release's dataset calls it."""
    ex, pts, dep = [], [], []
    for b in range(CONFIG["B"]):
        e, p, d = ds.invert_pose_ref_and_scale(
            inp["gt.extrinsics"][b], inp["gt.points"][b], depthmaps=inp["gt.depth"][b][..., None], ref_idx=0,
            scale_by_points=True,
        )
        ex.append(e)
        pts.append(p)
        dep.append(d)
    return {"extrinsics": torch.stack(ex), "points": torch.stack(pts), "depth": torch.stack(dep)}


def release_losses(loss, pred: dict, tgt: dict, inp: dict) -> dict[str, torch.Tensor]:
    """The loss calls of ``VideoProbeLitModule.model_step`` (loss weights 1, grad terms weighted 0)."""
    conf = inp["gt.confidence"]
    H, W = CONFIG["out_hw"]
    p = loss.point_loss(pred["world_points"], conf, tgt["points"], mask=None, normalize_pred=True,
                        normalize_gt=True, gradient_loss="grad")
    d = loss.depth_loss(pred["depth"], conf, tgt["depth"], mask=None, gradient_loss="grad")
    K = inp["gt.intrinsics"]
    c = loss.camera_loss(pred["pose_enc_list"], K, tgt["extrinsics"], (H, W), loss_type="huber")
    total = p["loss_point"] + d["loss_depth"] + c["loss_camera"]
    return {"points": p["loss_point"], "depth": d["loss_depth"], "camera": c["loss_camera"], "camera_T": c["loss_T"],
            "camera_R": c["loss_R"], "camera_fov": c["loss_fl"], "total": total}


def forward(model, inp: dict) -> dict:
    c = CONFIG
    H, W = c["out_hw"]
    feats = inp["features"].permute(0, 1, 4, 2, 3)  # the release's [B, S, C, h, w]
    blocks = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: blocks.extend(o[0]))
    out = model(feats, (c["B"], c["S"], 3, H, W))
    hook.remove()
    out["blocks"] = blocks
    return out


class FixedCuts:
    """Stands in for the numpy Generator of ``_sample_query_frames``: ``integers`` returns the given cut points."""

    def __init__(self, cuts):
        self.cuts = np.asarray(cuts)

    def integers(self, low, high, size=None, dtype=int):
        assert low == 0 and size == len(self.cuts) and (self.cuts < high).all()
        return self.cuts.copy()


def release_frames(ds) -> dict[str, torch.Tensor]:
    """Cut points -> raw frames -> frames floored to 1+4k, by the release's code (4 views, gap 5, window 76)."""
    g = np.random.default_rng(CONFIG["seed"])
    slack = 76 - (3 * 5 + 1)
    cuts = [[0, 0, 0], [slack] * 3, [0, slack // 2, slack], [1, 1, 2], [3, 3, 3]]
    cuts += g.integers(0, slack + 1, size=(300, 3)).tolist()
    this = types.SimpleNamespace(min_view_interval=5)
    raw, frames = [], []
    for c in cuts:
        sel = ds.VideoProbeDataset._sample_query_frames(this, FixedCuts(c), 4, 76, 0)
        raw.append(sel)
        frames.append((torch.floor((sel - 1) / 4) * 4 + 1).clamp(min=0).long())  # __getitem__'s flooring
    return {"sampler.cuts": torch.tensor(cuts, dtype=torch.int64), "sampler.raw": torch.stack(raw),
            "sampler.frames": torch.stack(frames)}


def lr_sequences(Sched, total: int, max_epochs: int, base_lr: float) -> torch.Tensor:
    """The lr of steps 0..total as the release's step-wise scheduler sets them."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base_lr, betas=tuple(CONFIG["betas"]), weight_decay=CONFIG["weight_decay"])
    warm = int(CONFIG["warmup_epochs"] * total / max_epochs)  # configure_optimizers' scaling
    sched = Sched(opt, warmup_epochs=warm, max_epochs=total, eta_min=CONFIG["eta_min"])
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of zxhuang1698/VidFM3D")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--commit", default=None, help="the checkout's commit (default: git rev-parse in --upstream)")
    args = ap.parse_args()
    up = args.upstream.resolve()
    probe_pixalign, backbone_pixalign, camera_head, loss, ds = import_release(up)
    Sched = import_scheduler()
    from safetensors.torch import save_file

    torch.manual_seed(CONFIG["seed"])
    g = torch.Generator().manual_seed(CONFIG["seed"] + 1)
    model = build_model(probe_pixalign, backbone_pixalign, camera_head)
    inp = make_inputs(g)
    tensors = {f"weight.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"in.{k}": v for k, v in inp.items()})

    with torch.no_grad():
        out = forward(model, inp)
    for i, b in enumerate(out["blocks"]):
        tensors[f"out.block.{i}"] = b.contiguous()
    for i, p in enumerate(out["pose_enc_list"]):
        tensors[f"out.pose_enc.{i}"] = p.contiguous()
    tensors["out.depth"] = out["depth"][..., 0].contiguous()
    tensors["out.depth_conf"] = out["depth_conf"].contiguous()
    tensors["out.world_points"] = out["world_points"].contiguous()
    tensors["out.world_points_conf"] = out["world_points_conf"].contiguous()

    tgt = release_targets(ds, inp)
    tensors["target.points"] = tgt["points"].contiguous()
    tensors["target.depth"] = tgt["depth"][..., 0].contiguous()
    tensors["target.extrinsics"] = tgt["extrinsics"].contiguous()

    # a clip whose frame-0 mean distance is above 1e4: the function returns it rebased but unscaled
    far = inp["gt.points"][0] * 1.0e5  # (the test rebuilds it the same way)
    res = ds.invert_pose_ref_and_scale(inp["gt.extrinsics"][0], far, depthmaps=inp["gt.depth"][0][..., None])
    tensors["target.far.points"] = res[1].contiguous()
    tensors["target.far.extrinsics"] = res[0].contiguous()
    try:
        _e, _p, _d = ds.invert_pose_ref_and_scale(inp["gt.extrinsics"][0], far, depthmaps=inp["gt.depth"][0][..., None])
        far_note = "returned three values"
    except ValueError as e:
        far_note = f"returns {len(res)} values; the dataset's 3-way unpacking raises ValueError: {e}"

    # losses, gradients and two optimiser steps (train mode: no dropout anywhere, same numbers)
    model.train()
    sc = CONFIG["step_schedule"]
    opt = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"], betas=tuple(CONFIG["betas"]),
                            weight_decay=CONFIG["weight_decay"])
    warm = int(CONFIG["warmup_epochs"] * sc["total"] / sc["max_epochs"])
    sched = Sched(opt, warmup_epochs=warm, max_epochs=sc["total"], eta_min=CONFIG["eta_min"])
    names = [n for n, _ in model.named_parameters()]
    step_lrs = []
    for step in range(2):
        pred = forward(model, inp)
        losses = release_losses(loss, pred, tgt, inp)
        if step == 0:
            for k, v in losses.items():
                tensors[f"loss.{k}"] = v.detach().reshape(1).clone()
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if step == 0:
            gn = [float(p.grad.norm()) if p.grad is not None else 0.0 for p in model.parameters()]
            tensors["grad.norms"] = torch.tensor(gn, dtype=torch.float32)
        step_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    sd = model.state_dict()
    for k in STEP_KEYS:
        tensors[f"step2.{k}"] = sd[k].detach().clone().contiguous()
    tensors["step.lrs"] = torch.tensor(step_lrs, dtype=torch.float64)
    for total, max_epochs in CONFIG["lr_schedules"]:
        tensors[f"lr.{total}_{max_epochs}"] = lr_sequences(Sched, total, max_epochs, CONFIG["lr"])

    tensors.update(release_frames(ds))
    tensors = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float64 else v).contiguous()
               for k, v in tensors.items()}
    commit = args.commit or subprocess.run(["git", "-C", str(up), "rev-parse", "HEAD"], capture_output=True,
                                           text=True).stdout.strip() or "unknown"
    meta = {
        "upstream_repo": REPO,
        "upstream_commit": commit,
        "modules": json.dumps([
            "vidfm3d.models.components.probe_pixalign.ProbeModelPA",
            "vidfm3d.models.components.backbone_pixalign.BackbonePA",
            "vidfm3d.models.components.dpt_head.DPTHead",
            "vidfm3d.vggt.heads.camera_head.CameraHead",
            "vidfm3d.data.components.video_probe_dataset.invert_pose_ref_and_scale",
            "vidfm3d.data.components.video_probe_dataset.VideoProbeDataset._sample_query_frames",
            "vidfm3d.utils.loss.point_loss/depth_loss/camera_loss",
            "torch.optim.AdamW",
            "pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR (lightning-bolts 0.7.0)",
        ]),
        "config": json.dumps(CONFIG),
        "parameter_order": json.dumps(names),
        "step_keys": json.dumps(list(STEP_KEYS)),
        "far_clip": far_note,
        "substitutions": json.dumps([
            "ProbeModelPA.backbone rebuilt as the release's BackbonePA with mlp_ratio 1 (ProbeModelPA: 4)",
            "ProbeModelPA.camera_head rebuilt as the release's CameraHead with trunk_depth 1, mlp_ratio 1 (4, 4)",
            "all parameters re-drawn from a seeded generator",
            "pl_bolts lr_scheduler.py loaded alone, its under_review decorator replaced by the identity",
            "vidfm3d.utils entered without its __init__ (hydra/rich helpers)",
            "_sample_query_frames called unbound (self: min_view_interval=5 only) with given cut points in place "
            "of numpy's random ones; the query_idx_divisor flooring written out as in __getitem__",
        ]),
        "generator": "tools/parity/probe.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(tensors)} tensors); losses at step 0:",
          {k[5:]: round(float(v), 5) for k, v in tensors.items() if k.startswith("loss.")}, "| far clip:", far_note)


if __name__ == "__main__":
    main()
