"""The Clip contract: one multi-view sample, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vidprobe.geometry import depth_to_world_points


class ClipError(ValueError):
    """A Clip (or the file it came from) violates the contract; the message names the field."""


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


@dataclass
class Clip:
    """One multi-view sample (see DESIGN.md).

    images      [T,3,H,W] float in [0,1]
    depth       [T,H,W]   float, 0 = unknown
    valid       [T,H,W]   bool
    intrinsics  [T,3,3]   pixels
    extrinsics  [T,3,4]   world->camera, OpenCV
    confidence  [T,H,W]   optional float (e.g. VGGT depth confidence, >= 1)
    points      [T,H,W,3] optional world points; derived from depth when absent
    frame_ids   [T]       long, indices into the source video
    meta        dict      dataset, sequence, category, source path ...
    """

    images: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    frame_ids: torch.Tensor
    confidence: torch.Tensor | None = None
    points: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = _where(self.meta.get("source"))
        self._check_tensor("images", 4, torch.is_floating_point)
        T, C, H, W = self.images.shape
        if C != 3:
            raise ClipError(f"{src}field 'images': expected [T,3,H,W], got shape {tuple(self.images.shape)}")
        if T < 1:
            raise ClipError(f"{src}field 'images': clip has no frames")
        self._check_tensor("depth", 3, torch.is_floating_point, (T, H, W))
        self._check_tensor("valid", 3, lambda t: t.dtype == torch.bool, (T, H, W), "bool")
        self._check_tensor("intrinsics", 3, torch.is_floating_point, (T, 3, 3))
        self._check_tensor("extrinsics", 3, torch.is_floating_point, (T, 3, 4))
        self._check_tensor("frame_ids", 1, lambda t: not torch.is_floating_point(t), (T,), "integer")
        if self.confidence is not None:
            self._check_tensor("confidence", 3, torch.is_floating_point, (T, H, W))
        if self.points is not None:
            self._check_tensor("points", 4, torch.is_floating_point, (T, H, W, 3))
        for name in ("images", "depth", "intrinsics", "extrinsics", "confidence", "points"):
            t = getattr(self, name)
            if t is not None and not torch.isfinite(t).all():
                bad = (~torch.isfinite(t)).nonzero()[0].tolist()
                raise ClipError(f"{src}field '{name}': non-finite value at index {bad}")
        if self.images.min() < 0 or self.images.max() > 1:
            raise ClipError(f"{src}field 'images': values must lie in [0,1], got [{self.images.min():.3g}, {self.images.max():.3g}]")
        if (self.depth < 0).any():
            raise ClipError(f"{src}field 'depth': negative depth values")
        f = torch.stack([self.intrinsics[:, 0, 0], self.intrinsics[:, 1, 1]], -1)
        if (f <= 0).any():
            bad = int((f <= 0).any(-1).nonzero()[0])
            raise ClipError(f"{src}field 'intrinsics': focal lengths must be positive (frame {bad})")
        R = self.extrinsics[:, :3, :3]
        eye = torch.eye(3, dtype=R.dtype).expand_as(R)
        err = (R @ R.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2))
        det = torch.linalg.det(R.double())
        if (err > 1e-3).any() or (det < 0).any():
            bad = int(((err > 1e-3) | (det < 0)).nonzero()[0])
            raise ClipError(f"{src}field 'extrinsics': rotation of frame {bad} is not orthonormal with det +1")

    def _check_tensor(self, name, ndim, dtype_ok, shape=None, dtype_name="floating point"):
        src = _where(self.meta.get("source"))
        t = getattr(self, name)
        if not isinstance(t, torch.Tensor):
            raise ClipError(f"{src}field '{name}': expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != ndim or (shape is not None and tuple(t.shape) != tuple(shape)):
            want = shape if shape is not None else f"{ndim} dims"
            raise ClipError(f"{src}field '{name}': expected shape {want}, got {tuple(t.shape)}")
        if not dtype_ok(t):
            raise ClipError(f"{src}field '{name}': expected {dtype_name} dtype, got {t.dtype}")

    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def world_points(self) -> torch.Tensor:
        """World point map ``[T,H,W,3]`` (stored points, or unprojected depth)."""
        if self.points is not None:
            return self.points
        return depth_to_world_points(self.depth, self.intrinsics, self.extrinsics)

    def select(self, idx) -> "Clip":
        """The sub-clip at positions ``idx`` (list or tensor of frame positions)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        opt = lambda t: None if t is None else t[idx]  # noqa: E731
        return Clip(
            images=self.images[idx],
            depth=self.depth[idx],
            valid=self.valid[idx],
            intrinsics=self.intrinsics[idx],
            extrinsics=self.extrinsics[idx],
            frame_ids=self.frame_ids[idx],
            confidence=opt(self.confidence),
            points=opt(self.points),
            meta=dict(self.meta),
        )
