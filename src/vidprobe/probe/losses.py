"""Probe losses and ground-truth preparation.

Ground truth (``gt``, at the output resolution, batched):
``points [B,S,H,W,3]`` world points, ``depth [B,S,H,W]``, ``valid [B,S,H,W]``
bool, ``confidence [B,S,H,W]`` (ones when the dataset has none),
``extrinsics [B,S,3,4]`` world->camera (OpenCV), ``intrinsics [B,S,3,3]``.

:func:`prepare_targets` rebases every clip to its first frame (identity
pose) and divides points, depth and camera translations by ONE scale: the
mean distance to the origin of the points of frame 0
(``scale_mode="first"``, the reference) or of all frames (``"all"``); see
:func:`vidprobe.geometry.normalize_scene`. ``scale_pixels`` says which
pixels enter that mean: the valid ones (``"valid"``) or all of them
(``"all"``: an invalid pixel counts at distance 0, where depth 0 unprojects
in frame 0). With ``scale_range = [lo, hi]`` a clip whose mean lies outside
is left unscaled (scale 1). The GT cameras are then encoded as 9-d poses
(:func:`vidprobe.geometry.encode_pose`). Invalid pixels are zeroed first so
non-finite values there never reach a loss.

:func:`probe_loss` = ``points_weight * L_points + depth_weight * L_depth +
camera_weight * L_camera`` over the heads present in the predictions.

- Points: with ``normalize_points`` (default on, the reference) the
  predicted and the GT point maps are EACH divided by their own mean
  distance to the origin over the valid pixels of the sample (all frames;
  the prediction's factor is not detached): ``point_norm="mean"``
  ``sum / count`` (at least ``eps``), ``"clamped"`` ``sum / (count + 1e-3)``
  clamped to ``[1e-3, 1e3]``. Per-pixel error ``e = ||p - g||_2``.
- Depth: ``e = |d - g|`` in the normalised scene (no extra scaling).
- Confidence (``conf_mode``, both dense terms):
  ``gt_weighted`` (reference): ``c_gt * e``; ``predicted`` (VGGT):
  ``c * e - conf_alpha * log c`` with the head's predicted confidence
  ``c >= 1``; ``none``: ``e``. The dense loss is the mean of that quantity
  over the valid pixels of the whole batch (pooled); a batch without any
  valid pixel contributes 0. With ``clamp`` (null by default) the per-pixel
  error ``e`` and then the per-pixel quantity are each clamped to
  ``[-clamp, clamp]``.
- Optional depth gradient term (``depth_grad_weight``, off by default): the
  mean absolute x/y finite difference of the depth residual ``d - g`` over
  pairs of horizontally / vertically adjacent valid pixels, added to the
  depth term.
- Camera: for each refinement step ``i`` of ``N``,
  ``l_i = w_T mean(h(t - t_gt)) + w_R mean(h(q - q_gt)) + w_F mean(h(fov - fov_gt))``
  with ``h`` the Huber loss (``delta`` 1, reference) or L1, means over
  batch, frames and components; ``L_camera = sum_i gamma^(N-i-1) l_i / N``
  (gamma 0.6; weights T 1.0, R 1.0, FoV 0.5). With ``clamp`` each element
  ``h(.)`` is clamped to ``[-clamp, clamp]`` before the means.

The values ``compat: reference`` gives these settings (clamp 100,
``point_norm="clamped"``, ``scale_pixels="all"``, ``scale_range [1e-3, 1e4]``)
are the release's; ``tests/test_parity_probe.py`` checks them against its
losses.

A NaN or Inf in any term raises :class:`NonFiniteLossError` naming the term
(and is counted in :data:`NONFINITE_COUNTS`); nothing is silently zeroed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vidprobe.config import ConfigError, Overrides, choices
from vidprobe.geometry import NormalizedScene, encode_pose, normalize_scene, rebase_to_first

CONF_MODES = ("gt_weighted", "predicted", "none")
CAMERA_LOSSES = ("huber", "l1")
SCALE_MODES = ("first", "all")
SCALE_PIXELS = ("valid", "all")
POINT_NORMS = ("mean", "clamped")

#: How many times each loss term was found non-finite in this process.
NONFINITE_COUNTS: Counter = Counter()


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or Inf; ``.term`` names it."""

    def __init__(self, term: str, value: float):
        self.term = term
        self.value = value
        self.count = NONFINITE_COUNTS[term]
        super().__init__(f"non-finite loss term {term!r}: {value} (seen {self.count} time(s) in this process)")


#: A loss configuration value is invalid (the message names the field): the one config error type.
LossConfigError = ConfigError


@dataclass
class LossConfig:
    points_weight: float = 1.0
    depth_weight: float = 1.0
    camera_weight: float = 1.0
    scale_mode: str = field(default="first", metadata=choices(SCALE_MODES))
    conf_mode: str = field(default="gt_weighted", metadata=choices(CONF_MODES))
    conf_alpha: float = 0.2
    normalize_points: bool = True
    depth_grad_weight: float = 0.0
    camera_loss: str = field(default="huber", metadata=choices(CAMERA_LOSSES))
    huber_delta: float = 1.0
    camera_t_weight: float = 1.0
    camera_r_weight: float = 1.0
    camera_fov_weight: float = 0.5
    camera_gamma: float = 0.6
    eps: float = 1e-6
    # settings whose default depends on the mode (vidprobe.probe.config.MODE_SETTINGS); these are clean's
    clamp: float | None = None
    point_norm: str = field(default="mean", metadata=choices(POINT_NORMS))
    scale_pixels: str = field(default="valid", metadata=choices(SCALE_PIXELS))
    scale_range: list[float] | None = None

    def __post_init__(self) -> None:
        if self.scale_mode not in SCALE_MODES:
            raise LossConfigError(f"LossConfig.scale_mode: expected one of {SCALE_MODES}, got {self.scale_mode!r}", "scale_mode")
        if self.conf_mode not in CONF_MODES:
            raise LossConfigError(f"LossConfig.conf_mode: expected one of {CONF_MODES}, got {self.conf_mode!r}", "conf_mode")
        if self.camera_loss not in CAMERA_LOSSES:
            raise LossConfigError(f"LossConfig.camera_loss: expected one of {CAMERA_LOSSES}, got {self.camera_loss!r}", "camera_loss")
        for name in ("points_weight", "depth_weight", "camera_weight", "conf_alpha", "depth_grad_weight",
                     "camera_t_weight", "camera_r_weight", "camera_fov_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise LossConfigError(f"LossConfig.{name}: expected a number >= 0, got {v!r}", name)
        if not 0 < self.camera_gamma <= 1:
            raise LossConfigError(f"LossConfig.camera_gamma: expected 0 < gamma <= 1, got {self.camera_gamma}", "camera_gamma")
        if self.huber_delta <= 0 or self.eps <= 0:
            raise LossConfigError("LossConfig.huber_delta and LossConfig.eps must be > 0")
        if self.clamp is not None and (isinstance(self.clamp, bool) or not isinstance(self.clamp, (int, float))
                                       or not self.clamp > 0):
            raise LossConfigError(f"LossConfig.clamp: expected a number > 0 or null, got {self.clamp!r}", "clamp")
        if self.point_norm not in POINT_NORMS:
            raise LossConfigError(f"LossConfig.point_norm: expected one of {POINT_NORMS}, got {self.point_norm!r}", "point_norm")
        if self.scale_pixels not in SCALE_PIXELS:
            raise LossConfigError(f"LossConfig.scale_pixels: expected one of {SCALE_PIXELS}, got {self.scale_pixels!r}", "scale_pixels")
        if self.scale_range is not None:
            r = self.scale_range
            ok = isinstance(r, (list, tuple)) and len(r) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
            if not ok or not 0 < r[0] < r[1]:
                raise LossConfigError(f"LossConfig.scale_range: expected [lo, hi] with 0 < lo < hi, or null, got {r!r}", "scale_range")
            self.scale_range = [float(r[0]), float(r[1])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossConfig:
        """The given fields (checked as a ``loss:`` section), the rest at their defaults."""
        try:
            given = dict(LossSection(d))
        except ConfigError as e:
            raise LossConfigError(f"LossConfig: {e}", e.path) from None
        return cls(**given)


class LossSection(Overrides):
    """The ``loss:`` section of a training config: the :class:`LossConfig` fields given (and the mode's values)."""

    schema = LossConfig


def _check_finite(term: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        NONFINITE_COUNTS[term] += 1
        raise NonFiniteLossError(term, float(value.detach().float().reshape(-1)[0]))


def _validate_gt(gt: dict) -> tuple[int, int, int, int]:
    for key in ("points", "depth", "valid", "extrinsics", "intrinsics"):
        if key not in gt:
            raise KeyError(f"ground truth: missing field {key!r} (have {sorted(gt)})")
    if gt["depth"].dim() != 4:
        raise ValueError(f"ground truth.depth: expected [B,S,H,W], got {tuple(gt['depth'].shape)}")
    B, S, H, W = gt["depth"].shape
    want = {
        "points": (B, S, H, W, 3),
        "depth": (B, S, H, W),
        "valid": (B, S, H, W),
        "confidence": (B, S, H, W),
        "extrinsics": (B, S, 3, 4),
        "intrinsics": (B, S, 3, 3),
    }
    for key, shape in want.items():
        if key in gt and tuple(gt[key].shape) != shape:
            raise ValueError(f"ground truth.{key}: expected shape {shape}, got {tuple(gt[key].shape)}")
    return B, S, H, W


def _scene(points, depth, ext, valid, scale_mode: str, scale_pixels: str, scale_range) -> NormalizedScene:
    """Rebase and scale (see the module docstring); ``normalize_scene`` when the pixels are the valid ones."""
    if scale_pixels == "valid" and scale_range is None:
        return normalize_scene(points, depth, ext, valid, mode=scale_mode)
    new_ext, pts = rebase_to_first(ext, points)
    dist = torch.where(valid, pts.norm(dim=-1), torch.zeros_like(depth))  # invalid: at the camera centre
    m = valid.to(dist.dtype) if scale_pixels == "valid" else torch.ones_like(dist)
    if scale_mode == "first":
        dist, m = dist[:, :1], m[:, :1]
    scale = dist.sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)
    if scale_range is None:
        scale = scale.clamp_min(1e-6)
    else:  # out of range: not rescaled
        lo, hi = scale_range
        scale = torch.where((scale < lo) | (scale > hi), torch.ones_like(scale), scale)
    new_ext = new_ext.clone()
    new_ext[..., :3, 3] = new_ext[..., :3, 3] / scale[:, None, None]
    return NormalizedScene(points=pts / scale[:, None, None, None, None], depth=depth / scale[:, None, None, None],
                           extrinsics=new_ext, scale=scale)


def prepare_targets(
    gt: dict,
    scale_mode: str = "first",
    image_hw: tuple[int, int] | None = None,
    scale_pixels: str = "valid",
    scale_range: list[float] | None = None,
) -> dict:
    """Rebase to frame 0, normalise the scale, encode the GT cameras.

    Returns a dict with ``points, depth, valid, confidence, extrinsics,
    intrinsics`` (normalised), ``pose_enc [B,S,9]`` and ``scale [B]`` (the
    factor the scene was divided by). ``image_hw`` (for the field of view)
    defaults to the ground-truth map size. ``scale_pixels`` and
    ``scale_range``: see the module docstring (:func:`targets_for` takes
    them from a :class:`LossConfig`).
    """
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"prepare_targets: scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
    if scale_pixels not in SCALE_PIXELS:
        raise ValueError(f"prepare_targets: scale_pixels must be one of {SCALE_PIXELS}, got {scale_pixels!r}")
    B, S, H, W = _validate_gt(gt)
    valid = gt["valid"].bool()
    points = gt["points"].float()
    depth = gt["depth"].float()
    # invalid pixels may hold anything (NaN/Inf from unknown depth): zero them
    valid = valid & torch.isfinite(points).all(-1) & torch.isfinite(depth)
    points = torch.where(valid[..., None], points, torch.zeros_like(points))
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    conf = gt.get("confidence")
    conf = torch.ones_like(depth) if conf is None else torch.where(valid, conf.float(), torch.zeros_like(depth))
    ext = gt["extrinsics"].float()
    intr = gt["intrinsics"].float()
    scene = _scene(points, depth, ext, valid, scale_mode, scale_pixels, scale_range)
    scene_pts = torch.where(valid[..., None], scene.points, torch.zeros_like(scene.points))
    hw = tuple(image_hw) if image_hw is not None else (H, W)
    return {
        "points": scene_pts,
        "depth": scene.depth,
        "valid": valid,
        "confidence": conf,
        "extrinsics": scene.extrinsics,
        "intrinsics": intr,
        "pose_enc": encode_pose(scene.extrinsics, intr, hw),
        "scale": scene.scale,
    }


def targets_for(gt: dict, cfg: LossConfig, image_hw: tuple[int, int] | None = None) -> dict:
    """:func:`prepare_targets` with the scale settings of ``cfg``."""
    return prepare_targets(gt, cfg.scale_mode, image_hw, scale_pixels=cfg.scale_pixels, scale_range=cfg.scale_range)


def _mean_distance(points: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Per-sample mean norm of ``points [B,...,3]`` over ``mask [B,...]`` -> ``[B]`` (``cfg.point_norm``)."""
    dims = tuple(range(1, mask.dim()))
    total = (points.norm(dim=-1) * mask).sum(dims)
    if cfg.point_norm == "clamped":
        return (total / (mask.sum(dims) + 1e-3)).clamp(1e-3, 1e3)
    return (total / mask.sum(dims).clamp_min(1)).clamp_min(cfg.eps)


def _clamp(x: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return x if cfg.clamp is None else x.clamp(-cfg.clamp, cfg.clamp)


def _dense_loss(err, mask, gt_conf, pred_conf, cfg: LossConfig, name: str) -> torch.Tensor:
    err = _clamp(err, cfg)
    if cfg.conf_mode == "gt_weighted":
        val = gt_conf * err
    elif cfg.conf_mode == "predicted":
        if pred_conf is None:
            raise KeyError(f"predictions: conf_mode 'predicted' needs '{name}_conf'")
        val = pred_conf * err - cfg.conf_alpha * torch.log(pred_conf)
    else:
        val = err
    val = torch.where(mask, _clamp(val, cfg), torch.zeros_like(val))
    return val.sum() / mask.sum().clamp_min(1)


def points_loss(pred: dict, tgt: dict, cfg: LossConfig) -> torch.Tensor:
    p = pred["points"].float()
    g = tgt["points"]
    m = tgt["valid"]
    if p.shape != g.shape:
        raise ValueError(f"predictions.points: shape {tuple(p.shape)} does not match ground truth {tuple(g.shape)}")
    if cfg.normalize_points:
        mf = m.to(p.dtype)
        view = (-1,) + (1,) * (p.dim() - 1)
        p = p / _mean_distance(p, mf, cfg).reshape(view)
        g = g / _mean_distance(g, mf, cfg).reshape(view)
    err = (p - g).norm(dim=-1)
    conf = pred.get("points_conf")
    return _dense_loss(err, m, tgt["confidence"], None if conf is None else conf.float(), cfg, "points")


def depth_gradient_loss(d: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean |finite difference| of the residual ``d - g`` over adjacent valid pixel pairs."""
    r = torch.where(m, d - g, torch.zeros_like(d))
    mx = m[..., :, 1:] & m[..., :, :-1]
    my = m[..., 1:, :] & m[..., :-1, :]
    gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * mx
    gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * my
    return (gx.sum() + gy.sum()) / (mx.sum() + my.sum()).clamp_min(1)


def depth_loss(pred: dict, tgt: dict, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    d = pred["depth"].float()
    g = tgt["depth"]
    m = tgt["valid"]
    if d.shape != g.shape:
        raise ValueError(f"predictions.depth: shape {tuple(d.shape)} does not match ground truth {tuple(g.shape)}")
    conf = pred.get("depth_conf")
    main = _dense_loss((d - g).abs(), m, tgt["confidence"], None if conf is None else conf.float(), cfg, "depth")
    grad = depth_gradient_loss(d, g, m) if cfg.depth_grad_weight > 0 else None
    return main, grad


def camera_loss(pose_list: list[torch.Tensor], gt_pose: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Stage-weighted camera loss; returns ``camera`` and its T / R / FoV parts (stage-weighted)."""
    n = len(pose_list)
    if n == 0:
        raise ValueError("predictions.pose_enc_list: empty")

    def h(a, b):
        if cfg.clamp is not None:  # element-wise, clamped, then the mean
            if cfg.camera_loss == "huber":
                return _clamp(F.huber_loss(a, b, reduction="none", delta=cfg.huber_delta), cfg).mean()
            return _clamp((a - b).abs(), cfg).mean()
        if cfg.camera_loss == "huber":
            return F.huber_loss(a, b, reduction="mean", delta=cfg.huber_delta)
        return (a - b).abs().mean()

    parts = {"camera_T": 0.0, "camera_R": 0.0, "camera_fov": 0.0}
    total = 0.0
    for i, p in enumerate(pose_list):
        p = p.float()
        if p.shape != gt_pose.shape:
            raise ValueError(f"predictions.pose_enc_list[{i}]: shape {tuple(p.shape)}, ground truth {tuple(gt_pose.shape)}")
        w = cfg.camera_gamma ** (n - i - 1)
        lt = h(p[..., :3], gt_pose[..., :3])
        lr = h(p[..., 3:7], gt_pose[..., 3:7])
        lf = h(p[..., 7:], gt_pose[..., 7:])
        parts["camera_T"] = parts["camera_T"] + w * lt / n
        parts["camera_R"] = parts["camera_R"] + w * lr / n
        parts["camera_fov"] = parts["camera_fov"] + w * lf / n
        total = total + w * (cfg.camera_t_weight * lt + cfg.camera_r_weight * lr + cfg.camera_fov_weight * lf)
    parts["camera"] = total / n
    return parts


def probe_loss(
    pred: dict,
    gt: dict,
    image_hw: tuple[int, int] | None = None,
    cfg: LossConfig | None = None,
    prepared: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its terms (detached) for the heads present in ``pred``.

    ``gt`` is raw ground truth (prepared here with ``cfg.scale_mode``) or,
    with ``prepared=True``, the output of :func:`prepare_targets`.
    """
    cfg = cfg or LossConfig()
    tgt = gt if prepared else targets_for(gt, cfg, image_hw)
    terms: dict[str, torch.Tensor] = {}
    total = None

    def add(name: str, value: torch.Tensor, weight: float):
        nonlocal total
        _check_finite(name, value)
        terms[name] = value.detach()
        total = weight * value if total is None else total + weight * value

    if "points" in pred:
        add("points", points_loss(pred, tgt, cfg), cfg.points_weight)
    if "depth" in pred:
        main, grad = depth_loss(pred, tgt, cfg)
        if grad is not None:
            _check_finite("depth_grad", grad)
            terms["depth_grad"] = grad.detach()
            main = main + cfg.depth_grad_weight * grad
        add("depth", main, cfg.depth_weight)
    if "pose_enc_list" in pred or "pose_enc" in pred:
        poses = pred.get("pose_enc_list") or [pred["pose_enc"]]
        parts = camera_loss(list(poses), tgt["pose_enc"], cfg)
        for k in ("camera_T", "camera_R", "camera_fov"):
            _check_finite(k, parts[k])
            terms[k] = parts[k].detach()
        add("camera", parts["camera"], cfg.camera_weight)
    if total is None:
        raise KeyError(f"predictions: no points, depth or pose_enc to supervise (have {sorted(pred)})")
    _check_finite("total", total)
    terms["total"] = total.detach()
    return total, terms


__all__ = [
    "CONF_MODES",
    "LossConfig",
    "LossConfigError",
    "LossSection",
    "NONFINITE_COUNTS",
    "NonFiniteLossError",
    "camera_loss",
    "depth_gradient_loss",
    "depth_loss",
    "points_loss",
    "prepare_targets",
    "probe_loss",
    "targets_for",
]
