#!/usr/bin/env python
"""Golden fixture for vidprobe's ``compat="reference"`` metrics (``vidprobe.metrics``).

Run (never in CI)::

    /work/upenv/bin/python tools/parity/metrics.py --upstream /work/up/<checkout of zxhuang1698/VidFM3D> \
        [--commit <sha>] [--out tests/fixtures/parity/metrics.safetensors]

The numbers are the ones the study's release *logs*: the script calls the
release's own ``VideoProbeLitModule.model_step`` and ``validation_step``
(``vidfm3d/models/video_probe_module.py``) unbound, on a stand-in ``self``
whose ``forward`` returns seeded predictions, and records every value the
step passes to ``self.log``:

* ``val/pmap_mse_aligned`` (Point Err: ``build_mask(thresh=0.75)``,
  ``align_pmaps`` and the confidence-weighted mean of ``validation_step``),
* ``val/loss_depth`` (Depth Err: ``depth_loss`` with no mask, i.e.
  ``conf_loss`` and ``check_and_fix_inf_nan``),
* ``val/Auc_{30,10,5,3}``, ``val/Rac_{5,15}``, ``val/Tac_{5,15}`` (``camera_loss(return_metrics=True)``:
  ``pose_encoding_to_extri_intri``, ``batched_se3_to_relative_pose_error``, ``calculate_auc``).

Dense metrics are logged once per clip (a one-clip batch, so each clip has its
own value) and once for the whole dense batch (the pooled Depth Err); the
camera metrics once per validation batch (10 clips, then 4). The per-pair
errors of ``batched_se3_to_relative_pose_error`` are saved as the release
computes them (float32) and on float64 copies of the same inputs (the
definition without float32 rounding, what vidprobe's float64 code is compared
with pair by pair); the script checks that no float32 pair error sits close
to a histogram bin edge or a 5/15-degree threshold, so both precisions give
the same logged numbers.

Inputs (seeded): a vidprobe-style ground truth with holes in the valid mask
(holes hold NaN points, NaN depth and a non-zero confidence; the release gets
them as vidprobe's ``prepare_targets`` hands them over: point 0, depth 0,
confidence 0), predictions with a Sim(3) offset and noise, large depth errors
(beyond the clamp of 100, some at confidence < 1), a NaN point, NaN and Inf
depths; cameras anchored at frame 0 with near-zero (1e-12) and zero
translations, and NaN / Inf in predicted pose encodings (translation of one
frame, quaternion of another, translation Inf in a third).

Substitutions (recorded in the metadata): the release's package
``__init__`` files are not executed (``vidfm3d/utils/__init__.py`` imports
hydra / rich training utilities); imports that only the skipped visualisation
or training paths use are stubbed: ``pytorch3d`` (knn / Pointclouds, used by
Chamfer helpers only), ``trimesh``, ``cv2`` (two colormap constants),
``torchvision``, ``pl_bolts`` (LR scheduler), ``torchmetrics`` (MeanMetric /
BaseAggregator base classes), ``lightning`` (``LightningModule`` replaced by
``torch.nn.Module``; ``self.log`` is the stand-in's recorder) and
``vidfm3d.utils.vis_utils``. No metric code is replaced.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "metrics.safetensors"
UPSTREAM_REPO = "zxhuang1698/VidFM3D"
MIRROR = Path("/work/.mirror/zxhuang1698+VidFM3D/repo")
STUBBED = ["pytorch3d", "trimesh", "cv2", "torchvision", "pl_bolts", "torchmetrics", "lightning",
           "vidfm3d.utils.vis_utils", "package __init__ of vidfm3d, vidfm3d.utils, vidfm3d.models, vidfm3d.vggt"]

S, H, W = 4, 6, 8  # frames and map size of every clip
N_DENSE = 6
CAM_BATCHES = (10, 4)  # the release's validation batch is 10 clips; the last one is short
IMAGE_HW = (294, 518)


def _mod(name: str, path: str | None = None, **attrs):
    m = types.ModuleType(name)
    if path is not None:
        m.__path__ = [path]
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def import_release(upstream: Path):
    """The release's ``VideoProbeLitModule`` and ``batched_se3_to_relative_pose_error`` (stubs: module docstring)."""
    for pkg in ("vidfm3d", "vidfm3d/utils", "vidfm3d/vggt", "vidfm3d/vggt/utils", "vidfm3d/models"):
        _mod(pkg.replace("/", "."), str(upstream / pkg))
    _mod("pytorch3d", "")
    _mod("pytorch3d.ops", "")
    _mod("pytorch3d.ops.knn", knn_gather=None, knn_points=None)
    _mod("pytorch3d.structures", "")
    _mod("pytorch3d.structures.pointclouds", Pointclouds=type("Pointclouds", (), {}))
    _mod("trimesh")
    _mod("cv2", COLORMAP_VIRIDIS=20, COLORMAP_JET=2)
    _mod("torchvision")
    _mod("pl_bolts", "")
    _mod("pl_bolts.optimizers", "")
    _mod("pl_bolts.optimizers.lr_scheduler", LinearWarmupCosineAnnealingLR=None)
    _mod("torchmetrics", MeanMetric=object)
    _mod("torchmetrics.aggregation", BaseAggregator=object)
    _mod("lightning", "", LightningModule=torch.nn.Module)
    _mod("lightning.pytorch", "")
    _mod("lightning.pytorch.loggers", "")
    _mod("lightning.pytorch.loggers.wandb", WandbLogger=type("WandbLogger", (), {}))
    _mod("vidfm3d.utils.vis_utils", dump_viser_artifact=None, save_scene_glb=None, vfm_pca_images=None)
    sys.path.insert(0, str(upstream))
    from vidfm3d.models.video_probe_module import VideoProbeLitModule
    from vidfm3d.utils.metrics import batched_se3_to_relative_pose_error
    from vidfm3d.vggt.utils.pose_enc import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri

    return VideoProbeLitModule, batched_se3_to_relative_pose_error, extri_intri_to_pose_encoding, pose_encoding_to_extri_intri


class StandIn:
    """The ``self`` the release's steps see: its ``forward`` returns given predictions; ``log`` records."""

    def __init__(self, module_cls, preds: dict):
        self.device = torch.device("cpu")
        self.loss_weights = {"pmap": 1.0, "dmap": 1.0, "pmap_grad": 0.0, "dmap_grad": 0.0, "camera": 1.0}
        self.kwargs = {"normalize_pred": False, "normalize_gt": False}
        self.hard_masking = True  # soft_bg_weight 0.0 in every shipped config
        self.cmap_power = 1.0
        self.current_epoch = 1  # 1 % val_viz_freq != val_viz_freq - 1: no visualisation
        self.val_viz_freq = 5
        self.output_path = "/nonexistent"
        self.logged: dict[str, float] = {}
        self._preds = preds
        self.model_step = types.MethodType(module_cls.model_step, self)
        self._step = types.MethodType(module_cls.validation_step, self)

    def forward(self, batch):
        return self._preds

    def val_loss(self, loss):
        pass

    def log(self, name, value, **kwargs):
        self.logged[name] = float(value)

    def run(self, batch) -> dict[str, float]:
        self._step(batch, 0)
        return dict(self.logged)


def _rot(g: torch.Generator, n: int, max_deg: float) -> torch.Tensor:
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    ang = torch.deg2rad(torch.rand(n, generator=g, dtype=torch.float64) * max_deg)
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    K = K - K.transpose(1, 2)
    s, c = torch.sin(ang)[:, None, None], torch.cos(ang)[:, None, None]
    return torch.eye(3, dtype=torch.float64) + s * K + (1 - c) * K @ K


def dense_inputs(seed: int) -> dict[str, torch.Tensor]:
    """Clips ``[N,S,H,W]``: raw GT (holes NaN), valid mask, confidence, predictions (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    n = N_DENSE
    gt_pts = torch.randn(n, S, H, W, 3, generator=g, dtype=torch.float64)
    gt_pts[..., 2] = gt_pts[..., 2].abs() + 1.0
    gt_depth = 0.5 + 2.0 * torch.rand(n, S, H, W, generator=g, dtype=torch.float64)
    conf = 1.0 + 4.0 * torch.rand(n, S, H, W, generator=g, dtype=torch.float64)
    conf[5].view(-1)[:40] = 0.5  # confidences below 1 where the depth errors are huge: both clamps matter
    valid = torch.rand(n, S, H, W, generator=g) > torch.tensor([0.0, 0.15, 0.3, 0.1, 0.2, 0.25]).view(n, 1, 1, 1)
    R = _rot(g, n, 60.0)
    scale = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    shift = torch.randn(n, 3, generator=g, dtype=torch.float64)
    pred_pts = torch.einsum("nij,nshwj->nshwi", R, gt_pts) * scale.view(n, 1, 1, 1, 1) + shift.view(n, 1, 1, 1, 3)
    pred_pts = pred_pts + 0.05 * torch.randn(pred_pts.shape, generator=g, dtype=torch.float64)
    pred_pts[3].view(-1, 3)[::7] += 25.0 * torch.randn(pred_pts[3].view(-1, 3)[::7].shape, generator=g, dtype=torch.float64)
    pred_pts[4, 1, 2, 3, 0] = float("nan")  # a diverged pixel: the release's Point Err becomes NaN
    pred_depth = gt_depth * (1 + 0.1 * torch.randn(gt_depth.shape, generator=g, dtype=torch.float64)).abs()
    pred_depth[5].view(-1)[:60] = 300.0 + 200.0 * torch.rand(60, generator=g, dtype=torch.float64)  # |e| > 100
    pred_depth[2].view(-1)[5::50] *= 80.0  # |e| c beyond 100 at confidence >= 1
    pred_depth[4, 0, 0, 0] = float("nan")
    pred_depth[4, 2, 1, 1] = float("inf")
    raw_pts = torch.where(valid[..., None], gt_pts, torch.full_like(gt_pts, float("nan")))
    raw_depth = torch.where(valid, gt_depth, torch.full_like(gt_depth, float("nan")))
    return {"dense_gt_points": raw_pts, "dense_gt_depth": raw_depth, "dense_gt_conf": conf, "dense_valid": valid,
            "dense_pred_points": pred_pts, "dense_pred_depth": pred_depth}


def release_dense_batch(d: dict, idx: slice) -> dict:
    """What the release's step gets: vidprobe's hand-over (holes -> 0, confidence 0), ``[B,S,C,H,W]`` float32."""
    v = d["dense_valid"][idx]
    pts = torch.where(v[..., None], torch.nan_to_num(d["dense_gt_points"][idx]), torch.zeros(()))
    dep = torch.where(v, torch.nan_to_num(d["dense_gt_depth"][idx]), torch.zeros(()))
    conf = torch.where(v, d["dense_gt_conf"][idx], torch.zeros(()))
    B = v.shape[0]
    batch = {"pmaps": pts.permute(0, 1, 4, 2, 3).float(), "dmaps": dep[:, :, None].float(),
             "cmaps": conf[:, :, None].float(), "image": torch.zeros(B, S, 3, H, W)}
    preds = {"pmaps": d["dense_pred_points"][idx].permute(0, 1, 4, 2, 3).float().clone(),
             "dmaps": d["dense_pred_depth"][idx][:, :, None].float().clone()}
    return batch, preds


def camera_inputs(seed: int, encode) -> dict[str, torch.Tensor]:
    """GT extrinsics / intrinsics and predicted pose encodings for ``sum(CAM_BATCHES)`` clips."""
    g = torch.Generator().manual_seed(seed)
    n = sum(CAM_BATCHES)
    R = _rot(g, n * S, 40.0).view(n, S, 3, 3)
    t = torch.randn(n, S, 3, generator=g, dtype=torch.float64)
    R[:, 0], t[:, 0] = torch.eye(3, dtype=torch.float64), 0.0  # anchored at frame 0
    t[2, 1] = 1e-12 * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # near-zero baselines (GT)
    t[3] = 0.0  # a pure rotation clip: every relative translation is exactly 0
    gt = torch.cat([R, t[..., None]], -1)
    noise_deg = torch.tensor([0.3, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]).repeat(2)[:n].double()
    dR = torch.stack([_rot(g, S, float(noise_deg[i])) for i in range(n)])
    Rp = dR @ R
    tp = t + 0.08 * noise_deg.view(n, 1, 1) / 8.0 * torch.randn(n, S, 3, generator=g, dtype=torch.float64)
    Rp[:, 0], tp[:, 0] = torch.eye(3, dtype=torch.float64), 0.0
    tp[2, 1] = 1e-12 * torch.tensor([0.8, 0.6, 0.0], dtype=torch.float64)  # near-zero (pred)
    tp[3] = 0.0
    tp[5, 2] = 1e-12 * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    pred = torch.cat([Rp, tp[..., None]], -1)
    K = torch.tensor([[300.0, 0, IMAGE_HW[1] / 2], [0, 300.0, IMAGE_HW[0] / 2], [0, 0, 1]]).expand(n, S, 3, 3)
    enc = encode(pred.float(), K.float(), IMAGE_HW)
    enc[7, 1, 0] = float("nan")  # translation of frame 1
    enc[11, 2, 4] = float("nan")  # quaternion of frame 2
    enc[12, 3, 1] = float("inf")  # translation of frame 3
    return {"cam_gt_extrinsics": gt.float(), "cam_intrinsics": K.float().contiguous(), "cam_pred_pose_enc": enc}


def _edges_ok(e32: torch.Tensor, e64: torch.Tensor, what: str) -> None:
    edges = torch.cat([torch.arange(1, 32, dtype=torch.float64) * 30.0 / 31.0, torch.tensor([5.0, 15.0], dtype=torch.float64)])
    ok = torch.isfinite(e64) & (e64 < 1e3)
    d = (e32.double()[ok][:, None] - edges[None]).abs().min()
    if d < 1e-3:
        raise SystemExit(f"{what}: a pair error lies {d:.2e} degrees from a bin edge; pick another seed")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of zxhuang1698/VidFM3D")
    ap.add_argument("--commit", default=None, help="its commit (default: git rev-parse in the checkout or mirror)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=3, help="3: no float32 pair error within 1e-3 deg of a bin edge")
    args = ap.parse_args(argv)
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    module_cls, pair_errors, encode, decode = import_release(args.upstream.resolve())
    out: dict[str, torch.Tensor] = {}

    d = dense_inputs(args.seed)
    out.update({k: v.float() if v.is_floating_point() else v.to(torch.uint8) for k, v in d.items()})
    point, depth = [], []
    for i in range(N_DENSE):
        batch, preds = release_dense_batch(d, slice(i, i + 1))
        logged = StandIn(module_cls, preds).run(batch)
        point.append(logged["val/pmap_mse_aligned"])
        depth.append(logged["val/loss_depth"])
    batch, preds = release_dense_batch(d, slice(0, N_DENSE))
    logged = StandIn(module_cls, preds).run(batch)
    out["ref_batch_point_err"] = torch.tensor([logged["val/pmap_mse_aligned"]])
    out["ref_batch_depth_err"] = torch.tensor([logged["val/loss_depth"]])
    # a clip of 8 pixels: the top 25% holds 2 pixels, fewer than the 3 the release's align_pmaps needs to fit
    g = torch.Generator().manual_seed(args.seed + 7)
    tiny_gt = torch.randn(1, 1, 2, 4, 3, generator=g, dtype=torch.float64)
    tiny = {"tiny_gt_points": tiny_gt, "tiny_pred_points": 2.0 * tiny_gt + 1.0,
            "tiny_gt_conf": (1.0 + torch.randperm(8, generator=g).double()).view(1, 1, 2, 4)}
    batch = {"pmaps": tiny_gt.permute(0, 1, 4, 2, 3).float(), "cmaps": tiny["tiny_gt_conf"][:, :, None].float(),
             "image": torch.zeros(1, 1, 3, 2, 4)}
    tiny_logged = StandIn(module_cls, {"pmaps": tiny["tiny_pred_points"].permute(0, 1, 4, 2, 3).float()}).run(batch)
    out.update({k: v.float() for k, v in tiny.items()})
    out["ref_tiny_point_err"] = torch.tensor([tiny_logged["val/pmap_mse_aligned"]])
    out["ref_point_err"] = torch.tensor(point)
    out["ref_depth_err"] = torch.tensor(depth)

    c = camera_inputs(args.seed + 1, encode)
    out.update(c)
    pred_ext, _ = decode(c["cam_pred_pose_enc"], IMAGE_HW, build_intrinsics=False)  # what camera_loss scores
    out["cam_pred_extrinsics"] = pred_ext.float().contiguous()
    keys = ("Auc_30", "Auc_10", "Auc_5", "Auc_3", "Rac_5", "Rac_15", "Tac_5", "Tac_15")
    per_batch = {k: [] for k in keys}
    r32, t32, r64, t64 = [], [], [], []
    start = 0
    for bs in CAM_BATCHES:
        sl = slice(start, start + bs)
        start += bs
        enc = c["cam_pred_pose_enc"][sl]
        batch = {"extrinsics": c["cam_gt_extrinsics"][sl], "intrinsics": c["cam_intrinsics"][sl],
                 "image": torch.zeros(bs, S, 3, *IMAGE_HW[:1], 1).expand(bs, S, 3, *IMAGE_HW),
                 "cmaps": torch.ones(bs, S, 1, 2, 2)}
        logged = StandIn(module_cls, {"pose": enc, "pose_list": [enc * 0.5, enc]}).run(batch)
        for k in keys:
            per_batch[k].append(logged[f"val/{k}"])
        r, t = pair_errors(pred_ext[sl].float(), c["cam_gt_extrinsics"][sl].float())
        rr, tt = pair_errors(pred_ext[sl].double(), c["cam_gt_extrinsics"][sl].double())
        _edges_ok(torch.maximum(r, t), torch.maximum(rr, tt), "pair error")
        _edges_ok(r, rr, "rotation error")
        _edges_ok(t, tt, "translation error")
        r32.append(r), t32.append(t), r64.append(rr), t64.append(tt)
    for k in keys:
        out[f"ref_{k}"] = torch.tensor(per_batch[k])
    out["ref_pair_rot_f32"], out["ref_pair_trans_f32"] = torch.cat(r32).float(), torch.cat(t32).float()
    out["ref_pair_rot_f64"], out["ref_pair_trans_f64"] = torch.cat(r64).float(), torch.cat(t64).float()

    commit = args.commit
    for where in (args.upstream, MIRROR):
        if commit:
            break
        try:
            commit = subprocess.run(["git", f"--git-dir={where / '.git' if (where / '.git').exists() else where}",
                                     "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            commit = None
    meta = {
        "upstream_repo": UPSTREAM_REPO,
        "upstream_commit": commit or "unknown",
        "upstream_functions": json.dumps([
            "vidfm3d.models.video_probe_module.VideoProbeLitModule.model_step",
            "vidfm3d.models.video_probe_module.VideoProbeLitModule.validation_step",
            "vidfm3d.utils.eval_utils.build_mask", "vidfm3d.utils.eval_utils.align_pmaps",
            "vidfm3d.utils.loss.depth_loss", "vidfm3d.utils.loss.camera_loss",
            "vidfm3d.utils.metrics.batched_se3_to_relative_pose_error", "vidfm3d.utils.metrics.calculate_auc",
            "vidfm3d.vggt.utils.pose_enc.extri_intri_to_pose_encoding",
            "vidfm3d.vggt.utils.pose_enc.pose_encoding_to_extri_intri"]),
        "substitutions": json.dumps(STUBBED),
        "config": json.dumps({"S": S, "H": H, "W": W, "dense_clips": N_DENSE, "camera_batches": list(CAM_BATCHES),
                              "image_hw": list(IMAGE_HW), "seed": args.seed, "cmap_power": 1.0,
                              "use_mask": False, "loss_weights": "pmap 1, dmap 1, camera 1, grads 0"}),
        "notes": "ref_*: values the release logs (float32); ref_pair_*_f64: the same functions on float64 copies; "
                 "dense GT holes are NaN here and reach the release as point 0, depth 0, confidence 0",
        "generator": "tools/parity/metrics.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out), metadata=meta)
    args.out.chmod(0o644)  # safetensors creates the file 0600
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): point {point}, depth {depth}")
    print("camera per batch:", {k: v for k, v in per_batch.items()})


if __name__ == "__main__":
    main()
