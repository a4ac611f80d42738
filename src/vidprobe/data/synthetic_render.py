"""Synthetic rendering: pinhole cameras (:func:`look_at`, :func:`make_intrinsics`) and vectorised ray casting.

Cameras are OpenCV (x right, y down, z forward), world->camera extrinsics
``[T,3,4]``, intrinsics ``K [T,3,3]`` with the principal point at the image
centre ``(W/2, H/2)`` (the convention of :mod:`vidprobe.geometry`: pixel
``(u, v)`` is the centre of column ``u``, row ``v``). :func:`render` casts one
ray per pixel centre with camera-frame direction ``((u-cx)/fx, (v-cy)/fy, 1)``,
so the ray parameter of a hit *is* its depth (z in the camera frame), and
shades the nearest hit with one directional light (Lambert) plus ambient.
Pixels whose ray hits nothing (sky) get the sky gradient, depth 0,
``valid = False`` and world point 0. Everything is float64.
"""

from __future__ import annotations

import contextlib
import math

import torch

from vidprobe.data.synthetic_scene import _DT, Scene

__all__ = ["look_at", "make_intrinsics", "cast_rays", "render"]


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV world->camera extrinsics ``[T,3,4]`` for cameras at ``eye [T,3]`` looking at ``target [T,3]``."""
    up_t = torch.as_tensor(up, dtype=eye.dtype).expand_as(eye)
    f = target - eye
    f = f / f.norm(dim=-1, keepdim=True)
    r = torch.linalg.cross(f, up_t)
    r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dn = torch.linalg.cross(f, r)
    R_c2w = torch.stack([r, dn, f], -1)  # columns: camera x, y, z in world
    R = R_c2w.transpose(-1, -2)
    t = -(R @ eye[..., None])
    return torch.cat([R, t], -1)


def make_intrinsics(hw: tuple[int, int], fov_deg: float, num_frames: int = 1) -> torch.Tensor:
    """Pinhole ``K [T,3,3]``: horizontal field of view ``fov_deg``, square pixels, centre ``(W/2, H/2)``."""
    h, w = hw
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=_DT)
    return K.expand(num_frames, 3, 3).clone()


# ----------------------------------------------------------------------------- rendering


def cast_rays(scene: Scene, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest hit of rays ``o + t d`` (``[N,3]`` each, float64).

    Returns ``t [N]`` (``inf`` on a miss), the colour ``[N,3]`` in [0,1] (sky on a
    miss) and the index of the primitive hit (``-1`` on a miss).
    """
    ts = torch.stack([p.intersect(o, d) for p in scene.primitives]) if scene.primitives else torch.full((1, len(o)), math.inf, dtype=_DT)
    t, idx = ts.min(0)
    hit = torch.isfinite(t)
    idx = torch.where(hit, idx, torch.full_like(idx, -1))
    dn = d / d.norm(dim=-1, keepdim=True)
    # sky: vertical gradient by ray elevation
    el = dn[:, 2].clamp(0, 1)[:, None]
    color = scene.sky_bottom + (scene.sky_top - scene.sky_bottom) * el
    for i, prim in enumerate(scene.primitives):
        m = idx == i
        if not m.any():
            continue
        p = o[m] + t[m, None] * d[m]
        n, uv = prim.surface(p)
        # face the viewer (planes and caps are two-sided)
        n = torch.where(((n * dn[m]).sum(-1) > 0)[:, None], -n, n)
        lam = (n @ scene.light_dir).clamp_min(0)
        shade = scene.ambient + (1 - scene.ambient) * lam
        color[m] = prim.material.shade(uv) * shade[:, None]
    return t, color.clamp(0, 1), idx


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def render(
    scene: Scene,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    hw: tuple[int, int],
    chunk_frames: int = 16,
    num_threads: int | None = None,
) -> dict[str, torch.Tensor]:
    """Render frames; returns float64 ``images [T,3,H,W]``, ``depth [T,H,W]``, ``valid``, ``points [T,H,W,3]``.

    ``num_threads``: torch intra-op threads while rendering (restored after).
    By default small frames (under 1M rays per chunk) render on one thread:
    the work is many small element-wise ops, where extra threads gain little
    and, on a busy machine, their spin-waiting made rendering 10-30x slower.
    """
    h, w = hw
    if num_threads is None and chunk_frames * h * w < 1_000_000:
        num_threads = 1
    with _threads(num_threads):
        return _render(scene, extrinsics, intrinsics, hw, chunk_frames)


def _render(scene, extrinsics, intrinsics, hw, chunk_frames):
    h, w = hw
    T = extrinsics.shape[0]
    E = extrinsics.to(_DT)
    K = intrinsics.to(_DT)
    v, u = torch.meshgrid(torch.arange(h, dtype=_DT), torch.arange(w, dtype=_DT), indexing="ij")
    imgs, depths, valids, points = [], [], [], []
    for s in range(0, T, chunk_frames):
        e, k = E[s : s + chunk_frames], K[s : s + chunk_frames]
        n = e.shape[0]
        x = (u - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None]
        y = (v - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None]
        d_cam = torch.stack([x, y, torch.ones_like(x)], -1)  # [n,H,W,3], z = 1
        Rt = e[:, :3, :3].transpose(-1, -2)  # camera->world rotation
        d_w = (Rt[:, None, None] @ d_cam[..., None])[..., 0]
        centre = -(Rt @ e[:, :3, 3:])[..., 0]  # [n,3]
        o_w = centre[:, None, None, :].expand_as(d_w)
        t, col, _ = cast_rays(scene, o_w.reshape(-1, 3), d_w.reshape(-1, 3))
        hit = torch.isfinite(t)
        depth = torch.where(hit, t, torch.zeros_like(t))
        pts = o_w.reshape(-1, 3) + depth[:, None] * d_w.reshape(-1, 3)
        pts = torch.where(hit[:, None], pts, torch.zeros_like(pts))
        imgs.append(col.reshape(n, h, w, 3).permute(0, 3, 1, 2))
        depths.append(depth.reshape(n, h, w))
        valids.append(hit.reshape(n, h, w))
        points.append(pts.reshape(n, h, w, 3))
    return {
        "images": torch.cat(imgs),
        "depth": torch.cat(depths),
        "valid": torch.cat(valids),
        "points": torch.cat(points),
    }

