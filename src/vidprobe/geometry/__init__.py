"""Camera geometry in one convention.

Conventions (stated once, used everywhere):

* Cameras are OpenCV: x right, y down, z forward.
* ``intrinsics`` ``K [...,3,3]`` are in pixels; pixel centres sit at integer
  coordinates + 0.5 is *not* used: pixel ``(u, v)`` is the centre of column
  ``u`` and row ``v`` (the convention of VGGT and of the reference release).
* ``extrinsics`` ``E [...,3,4] = [R | t]`` map world to camera:
  ``x_cam = R x_world + t``.
* Quaternions are scalar-last ``(x, y, z, w)`` (roma's order), normalised
  with ``w >= 0``.
* The 9-d pose encoding is ``[t (3), q (4), fov_h, fov_w]`` where
  ``fov_h = 2 atan(H / (2 f_y))`` and ``fov_w = 2 atan(W / (2 f_x))``; the
  principal point is assumed at the image centre when decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

__all__ = [
    "to_homogeneous",
    "invert_extrinsics",
    "compose_extrinsics",
    "relative_extrinsics",
    "camera_centers",
    "unproject_depth",
    "cam_to_world",
    "world_to_cam",
    "project",
    "depth_to_world_points",
    "rebase_to_first",
    "normalize_scene",
    "NormalizedScene",
    "encode_pose",
    "decode_pose",
    "rotmat_to_quat",
    "quat_to_rotmat",
    "umeyama",
    "apply_sim3",
    "Sim3",
]


def to_homogeneous(extrinsics: torch.Tensor) -> torch.Tensor:
    """``[...,3,4]`` -> ``[...,4,4]`` by appending ``[0, 0, 0, 1]``."""
    if extrinsics.shape[-2:] == (4, 4):
        return extrinsics
    bottom = torch.zeros(*extrinsics.shape[:-2], 1, 4, dtype=extrinsics.dtype, device=extrinsics.device)
    bottom[..., 0, 3] = 1
    return torch.cat([extrinsics, bottom], dim=-2)


def invert_extrinsics(extrinsics: torch.Tensor) -> torch.Tensor:
    """Invert rigid ``[R|t]`` (``[...,3,4]``) exactly: ``[R^T | -R^T t]``."""
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    return torch.cat([Rt, -Rt @ t], dim=-1)


def compose_extrinsics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a ∘ b`` for ``[...,3,4]`` rigid maps (apply ``b`` first)."""
    R = a[..., :3, :3] @ b[..., :3, :3]
    t = a[..., :3, :3] @ b[..., :3, 3:] + a[..., :3, 3:]
    return torch.cat([R, t], dim=-1)


def relative_extrinsics(e_i: torch.Tensor, e_j: torch.Tensor) -> torch.Tensor:
    """Relative pose ``E_i E_j^{-1}`` (camera j -> camera i); invariant to the world frame."""
    return compose_extrinsics(e_i, invert_extrinsics(e_j))


def camera_centers(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, ``[...,3]``."""
    return invert_extrinsics(extrinsics)[..., :3, 3]


def _pixel_grid(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return u, v


def unproject_depth(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Depth ``[...,H,W]`` (z along the optical axis) -> camera points ``[...,H,W,3]``."""
    h, w = depth.shape[-2:]
    u, v = _pixel_grid(h, w, depth.device, depth.dtype)
    fx = intrinsics[..., 0, 0, None, None]
    fy = intrinsics[..., 1, 1, None, None]
    cx = intrinsics[..., 0, 2, None, None]
    cy = intrinsics[..., 1, 2, None, None]
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def cam_to_world(points_cam: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera points ``[...,H,W,3]`` -> world, with ``extrinsics [...,3,4]`` world->camera."""
    inv = invert_extrinsics(extrinsics)
    R = inv[..., None, None, :3, :3]
    t = inv[..., None, None, :3, 3]
    return (R @ points_cam[..., None])[..., 0] + t


def world_to_cam(points_world: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """World points ``[...,H,W,3]`` -> camera frame of ``extrinsics [...,3,4]``."""
    R = extrinsics[..., None, None, :3, :3]
    t = extrinsics[..., None, None, :3, 3]
    return (R @ points_world[..., None])[..., 0] + t


def project(points_cam: torch.Tensor, intrinsics: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Camera points ``[...,H,W,3]`` -> pixel coordinates ``[...,H,W,2]`` (u, v)."""
    K = intrinsics[..., None, None, :, :]
    z = points_cam[..., 2:3].clamp_min(eps)
    uvw = (K @ points_cam[..., None])[..., 0]
    return uvw[..., :2] / z


def depth_to_world_points(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Depth ``[...,H,W]`` -> world point map ``[...,H,W,3]``."""
    return cam_to_world(unproject_depth(depth, intrinsics), extrinsics)


def rebase_to_first(extrinsics: torch.Tensor, points: torch.Tensor | None = None):
    """Make frame 0 of each clip the world frame.

    ``extrinsics [...,T,3,4]`` become ``E_t E_0^{-1}`` (frame 0 -> identity);
    world ``points [...,T,H,W,3]`` are mapped by ``E_0``. Returns
    ``(extrinsics, points)`` (``points`` is ``None`` when not given).
    """
    e0 = extrinsics[..., :1, :, :]
    new_ext = compose_extrinsics(extrinsics, invert_extrinsics(e0).expand_as(extrinsics))
    new_pts = None
    if points is not None:
        R = e0[..., None, None, :3, :3]
        t = e0[..., None, None, :3, 3]
        new_pts = (R @ points[..., None])[..., 0] + t
    return new_ext, new_pts


@dataclass
class NormalizedScene:
    points: torch.Tensor
    depth: torch.Tensor
    extrinsics: torch.Tensor
    scale: torch.Tensor  # the factor the scene was divided by, [...]


def normalize_scene(
    points: torch.Tensor,
    depth: torch.Tensor,
    extrinsics: torch.Tensor,
    valid: torch.Tensor,
    mode: str = "first",
    eps: float = 1e-6,
) -> NormalizedScene:
    """Rebase a clip to its first frame and scale it to unit mean point distance.

    ``points [...,T,H,W,3]`` world points, ``depth [...,T,H,W]``,
    ``extrinsics [...,T,3,4]``, ``valid [...,T,H,W]``. After rebasing,
    the scale is the mean distance to the origin of the valid points of the
    first frame (``mode="first"``, the reference) or of all frames
    (``mode="all"``). Points, depth and camera translations are divided by
    that one scale.
    """
    if mode not in ("first", "all"):
        raise ValueError(f"normalize_scene: mode must be 'first' or 'all', got {mode!r}")
    ext, pts = rebase_to_first(extrinsics, points)
    dist = pts.norm(dim=-1)
    m = valid.to(dist.dtype)
    if mode == "first":
        dist, m = dist[..., :1, :, :], m[..., :1, :, :]
    reduce_dims = tuple(range(dist.dim() - 3, dist.dim()))
    scale = (dist * m).sum(reduce_dims) / m.sum(reduce_dims).clamp_min(1)
    scale = scale.clamp_min(eps)
    s_pts = scale[..., None, None, None, None]
    s_dep = scale[..., None, None, None]
    ext = ext.clone()
    ext[..., :3, 3] = ext[..., :3, 3] / scale[..., None, None]
    return NormalizedScene(points=pts / s_pts, depth=depth / s_dep, extrinsics=ext, scale=scale)


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices -> unit quaternions ``(x, y, z, w)`` with ``w >= 0``."""
    q = roma.rotmat_to_unitquat(R)
    return torch.where(q[..., 3:4] < 0, -q, q)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(x, y, z, w)`` (normalised here) -> rotation matrices."""
    return roma.unitquat_to_rotmat(roma.quat_normalize(q))


def encode_pose(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """``[...,3,4]`` extrinsics + ``[...,3,3]`` intrinsics -> ``[...,9]`` pose encoding."""
    h, w = image_hw
    t = extrinsics[..., :3, 3]
    q = rotmat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat([t, q, fov_h[..., None], fov_w[..., None]], dim=-1)


def decode_pose(pose_enc: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of :func:`encode_pose` (principal point at the image centre)."""
    h, w = image_hw
    t = pose_enc[..., :3]
    R = quat_to_rotmat(pose_enc[..., 3:7])
    fy = (h / 2) / torch.tan(pose_enc[..., 7] / 2)
    fx = (w / 2) / torch.tan(pose_enc[..., 8] / 2)
    K = torch.zeros(*pose_enc.shape[:-1], 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = w / 2
    K[..., 1, 2] = h / 2
    K[..., 2, 2] = 1
    return torch.cat([R, t[..., None]], dim=-1), K


@dataclass
class Sim3:
    """``x -> s R x + t``; batched over leading dims."""

    scale: torch.Tensor  # [...]
    rotation: torch.Tensor  # [...,3,3]
    translation: torch.Tensor  # [...,3]


def umeyama(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None, with_scale: bool = True
) -> Sim3:
    """Least-squares ``Sim(3)`` (or ``SE(3)``) mapping ``src [...,N,3]`` onto ``dst [...,N,3]``.

    Umeyama's closed form via roma; ``weights [...,N]`` (non-negative)
    weight each correspondence. Computed in float64 for stability.
    """
    dtype = src.dtype
    s64, d64 = src.double(), dst.double()
    w64 = None if weights is None else weights.double()
    R, t, s = _registration(s64, d64, w64, with_scale)
    return Sim3(scale=s.to(dtype), rotation=R.to(dtype), translation=t.to(dtype))


def _registration(src, dst, weights, with_scale):
    if with_scale:
        R, t, s = roma.rigid_points_registration(src, dst, weights=weights, compute_scaling=True)
    else:
        R, t = roma.rigid_points_registration(src, dst, weights=weights, compute_scaling=False)
        s = torch.ones(src.shape[:-2], dtype=src.dtype, device=src.device)
    return R, t, s


def apply_sim3(sim: Sim3, points: torch.Tensor) -> torch.Tensor:
    """Apply ``sim`` to ``points [..., N, 3]`` (leading dims match the transform)."""
    # one [N,3] x [3,3] product per transform (a batched 3x3 @ 3x1 per point is ~30x slower)
    rotated = points @ sim.rotation.transpose(-1, -2)
    return sim.scale[..., None, None] * rotated + sim.translation[..., None, :]
