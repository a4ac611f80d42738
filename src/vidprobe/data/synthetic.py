"""Built-in synthetic multi-view data with exact ground truth (no downloads).

Scenes are made of textured primitives (boxes, spheres, vertical cylinders,
finite planes) with procedural textures (checker, value noise, stripes) and
their own colours, lit by one directional light (Lambert) plus ambient.
Frames are rendered by vectorised ray casting in torch: one ray per pixel
centre, analytic ray-primitive intersection, nearest hit. Geometry is
computed in float64 and stored as float32.

Cameras are OpenCV (x right, y down, z forward), world->camera extrinsics,
principal point at the image centre ``(W/2, H/2)`` (the convention of
:mod:`vidprobe.geometry`: pixel ``(u, v)`` is the centre of column ``u``, row
``v``). The world is z-up; the ground is ``z = 0``. The ray through pixel
``(u, v)`` has camera-frame direction ``((u-cx)/fx, (v-cy)/fy, 1)``, so the
ray parameter of a hit *is* its depth (z in the camera frame). Pixels whose
ray hits nothing (sky) get depth 0, ``valid = False``, world point 0.

Two families, like the real benchmarks:

* ``orbit`` (CO3D-like): one to three objects on a textured ground plane
  (plus a few distant clutter boxes), the camera circles them at a random
  radius and elevation with a slight radius/height wobble, looking at the
  object.
* ``walk`` (DL3DV-like): a room-sized layout (floor, four walls, sometimes a
  ceiling, several objects); the camera moves along a smooth path through
  the room, looking roughly ahead and inward.

Everything is deterministic from ``(family, seed)``; the scene layout and the
camera path do not depend on the resolution or the frame count (the path is
parametrised over ``[0, 1]`` and sampled at ``num_frames`` points).
"""

from __future__ import annotations

import contextlib
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vidprobe.data.clip import Clip

__all__ = [
    "FAMILIES",
    "generate_clip",
    "write_synthetic_dataset",
    "make_scene",
    "render",
    "look_at",
    "make_intrinsics",
    "cast_rays",
]

FAMILIES = ("orbit", "walk")
_DT = torch.float64
_EPS = 1e-6
_NOISE_GRID = 32


# ----------------------------------------------------------------------------- materials


@dataclass
class Material:
    """Procedural texture: blend of two colours by a pattern value in [0,1]."""

    kind: str  # "checker" | "noise" | "stripes"
    color_a: torch.Tensor  # [3]
    color_b: torch.Tensor  # [3]
    scale: float  # world units per pattern cell
    angle: float = 0.0  # stripes direction
    noise: torch.Tensor | None = None  # [G,G] lattice values for value noise

    def shade(self, uv: torch.Tensor) -> torch.Tensor:
        """Texture colour ``[N,3]`` at texture coordinates ``uv [N,2]`` (world units)."""
        s, t = uv[:, 0] / self.scale, uv[:, 1] / self.scale
        if self.kind == "checker":
            f = torch.remainder(torch.floor(s) + torch.floor(t), 2.0)
        elif self.kind == "stripes":
            p = s * math.cos(self.angle) + t * math.sin(self.angle)
            f = (torch.sin(2 * math.pi * p) > 0).to(_DT)
        elif self.kind == "noise":
            assert self.noise is not None
            f = torch.zeros_like(s)
            amp, total = 1.0, 0.0
            for octave in range(3):
                freq = 2.0**octave
                f = f + amp * _value_noise(self.noise, s * freq + 7.3 * octave, t * freq - 3.1 * octave)
                total += amp
                amp *= 0.5
            f = f / total
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        return self.color_a + (self.color_b - self.color_a) * f[:, None]


def _value_noise(table: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear value noise with smoothstep weights on a wrapping lattice."""
    g = table.shape[0]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix = torch.remainder(x0.long(), g)
    iy = torch.remainder(y0.long(), g)
    ix1, iy1 = (ix + 1) % g, (iy + 1) % g
    v00, v10 = table[iy, ix], table[iy, ix1]
    v01, v11 = table[iy1, ix], table[iy1, ix1]
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy


# ----------------------------------------------------------------------------- primitives


class Primitive:
    material: Material

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Ray parameter of the first hit in front of the origin, ``inf`` when missed."""
        raise NotImplementedError

    def surface(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit normal ``[N,3]`` and texture coordinates ``[N,2]`` at surface points ``p``."""
        raise NotImplementedError


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=_DT)


class Plane(Primitive):
    """Rectangle ``center + a*u + b*v`` with ``|a| <= half_u``, ``|b| <= half_v`` (inf allowed)."""

    def __init__(self, center, u, v, half_u, half_v, material: Material):
        self.center, self.u, self.v = _t(center), _t(u), _t(v)
        self.normal = torch.linalg.cross(self.u, self.v)
        self.half_u, self.half_v = float(half_u), float(half_v)
        self.material = material

    def intersect(self, o, d):
        denom = d @ self.normal
        safe = torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
        t = ((self.center - o) @ self.normal) / safe
        p = o + t[:, None] * d
        rel = p - self.center
        a, b = rel @ self.u, rel @ self.v
        ok = (denom.abs() >= 1e-12) & (t > _EPS) & (a.abs() <= self.half_u) & (b.abs() <= self.half_v)
        return torch.where(ok, t, torch.full_like(t, math.inf))

    def surface(self, p):
        rel = p - self.center
        uv = torch.stack([rel @ self.u, rel @ self.v], -1)
        return self.normal.expand(len(p), 3), uv


class Sphere(Primitive):
    def __init__(self, center, radius, material: Material):
        self.center, self.radius, self.material = _t(center), float(radius), material

    def intersect(self, o, d):
        oc = o - self.center
        a = (d * d).sum(-1)
        b = 2 * (oc * d).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - 4 * a * c
        sq = torch.sqrt(disc.clamp_min(0))
        t1 = (-b - sq) / (2 * a)
        t2 = (-b + sq) / (2 * a)
        t = torch.where(t1 > _EPS, t1, t2)
        ok = (disc >= 0) & (t > _EPS)
        return torch.where(ok, t, torch.full_like(t, math.inf))

    def surface(self, p):
        rel = p - self.center
        n = rel / rel.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        r = self.radius
        az = torch.atan2(n[:, 1], n[:, 0])
        el = torch.asin(n[:, 2].clamp(-1, 1))
        return n, torch.stack([az * r, el * r], -1)


def _yaw(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return _t([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Box(Primitive):
    """Box with half sizes ``half`` rotated by ``yaw`` about the world z axis."""

    def __init__(self, center, half, yaw: float, material: Material):
        self.center, self.half, self.R = _t(center), _t(half), _yaw(yaw)
        self.material = material

    def intersect(self, o, d):
        ol = (o - self.center) @ self.R
        dl = d @ self.R
        dl = torch.where(dl.abs() < 1e-12, torch.where(dl < 0, -1e-12, 1e-12), dl)
        inv = 1.0 / dl
        t1 = (-self.half - ol) * inv
        t2 = (self.half - ol) * inv
        tmin = torch.minimum(t1, t2).amax(-1)
        tmax = torch.maximum(t1, t2).amin(-1)
        t = torch.where(tmin > _EPS, tmin, tmax)
        ok = (tmax >= tmin) & (t > _EPS)
        return torch.where(ok, t, torch.full_like(t, math.inf))

    def surface(self, p):
        pl = (p - self.center) @ self.R
        rel = pl.abs() / self.half
        axis = rel.argmax(-1)
        nl = torch.zeros_like(pl)
        nl.scatter_(1, axis[:, None], torch.sign(pl.gather(1, axis[:, None])))
        n = nl @ self.R.T
        # texture coordinates: the two local coordinates other than the face axis
        others = torch.tensor([[1, 2], [0, 2], [0, 1]])[axis]
        uv = pl.gather(1, others)
        return n, uv


class Cylinder(Primitive):
    """Vertical (z axis) capped cylinder."""

    def __init__(self, center, radius: float, half_height: float, material: Material):
        self.center, self.radius, self.hh = _t(center), float(radius), float(half_height)
        self.material = material

    def intersect(self, o, d):
        oc = o - self.center
        inf = torch.full_like(oc[:, 0], math.inf)
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2 * (oc[:, 0] * d[:, 0] + oc[:, 1] * d[:, 1])
        c = oc[:, 0] ** 2 + oc[:, 1] ** 2 - self.radius**2
        disc = b * b - 4 * a * c
        sq = torch.sqrt(disc.clamp_min(0))
        a_safe = torch.where(a < 1e-12, torch.ones_like(a), a)
        best = inf
        for sign in (-1.0, 1.0):
            ts = (-b + sign * sq) / (2 * a_safe)
            z = oc[:, 2] + ts * d[:, 2]
            ok = (a >= 1e-12) & (disc >= 0) & (ts > _EPS) & (z.abs() <= self.hh)
            best = torch.minimum(best, torch.where(ok, ts, inf))
        dz = torch.where(d[:, 2].abs() < 1e-12, torch.full_like(a, 1e-12), d[:, 2])
        for cap in (-self.hh, self.hh):
            tc = (cap - oc[:, 2]) / dz
            x = oc[:, 0] + tc * d[:, 0]
            y = oc[:, 1] + tc * d[:, 1]
            ok = (tc > _EPS) & (x * x + y * y <= self.radius**2)
            best = torch.minimum(best, torch.where(ok, tc, inf))
        return best

    def surface(self, p):
        rel = p - self.center
        radial = torch.sqrt(rel[:, 0] ** 2 + rel[:, 1] ** 2)
        on_cap = (rel[:, 2].abs() - self.hh).abs() < (radial - self.radius).abs()
        side_n = torch.stack([rel[:, 0], rel[:, 1], torch.zeros_like(radial)], -1) / radial.clamp_min(1e-12)[:, None]
        cap_n = torch.zeros_like(rel)
        cap_n[:, 2] = torch.sign(rel[:, 2])
        n = torch.where(on_cap[:, None], cap_n, side_n)
        ang = torch.atan2(rel[:, 1], rel[:, 0])
        uv_side = torch.stack([ang * self.radius, rel[:, 2]], -1)
        uv = torch.where(on_cap[:, None], rel[:, :2], uv_side)
        return n, uv


@dataclass
class Scene:
    primitives: list[Primitive]
    light_dir: torch.Tensor  # [3] unit, towards the light
    ambient: float
    sky_top: torch.Tensor  # [3]
    sky_bottom: torch.Tensor  # [3]


# ----------------------------------------------------------------------------- cameras


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


# ----------------------------------------------------------------------------- scene generation


def _rng(family: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(family.encode())])


def _color(rng: np.random.Generator) -> torch.Tensor:
    # saturated-ish random colour via HSV
    h, s, v = rng.uniform(0, 1), rng.uniform(0.35, 0.9), rng.uniform(0.45, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, tt = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, tt, p), (q, v, p), (p, v, tt), (p, q, v), (tt, p, v), (v, p, q)][i]
    return _t(rgb)


def _material(rng: np.random.Generator, scale_range=(0.15, 0.5)) -> Material:
    kind = str(rng.choice(["checker", "noise", "stripes"]))
    a = _color(rng)
    b = _color(rng)
    if (a - b).abs().sum() < 0.5:  # keep the pattern visible
        b = (1 - a) * 0.8 + 0.1
    noise = torch.from_numpy(rng.uniform(0, 1, (_NOISE_GRID, _NOISE_GRID)))
    return Material(kind=kind, color_a=a, color_b=b, scale=float(rng.uniform(*scale_range)),
                    angle=float(rng.uniform(0, math.pi)), noise=noise)


def _object(rng: np.random.Generator, xy, size: float, kind: str | None = None) -> tuple[Primitive, float]:
    """A random object standing on the ground at ``xy``; returns it and its footprint radius."""
    kind = kind or str(rng.choice(["box", "sphere", "cylinder"]))
    mat = _material(rng, (0.06 * size / 0.5, 0.3 * size / 0.5))
    x, y = float(xy[0]), float(xy[1])
    if kind == "box":
        half = [size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.4)]
        prim: Primitive = Box([x, y, half[2]], half, float(rng.uniform(0, math.pi)), mat)
        return prim, math.hypot(half[0], half[1])
    if kind == "sphere":
        r = size * rng.uniform(0.6, 1.0)
        return Sphere([x, y, r], r, mat), r
    r = size * rng.uniform(0.4, 0.8)
    hh = size * rng.uniform(0.5, 1.5)
    return Cylinder([x, y, hh], r, hh, mat), r


def _light(rng: np.random.Generator) -> torch.Tensor:
    az, el = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(35), math.radians(70))
    return _t([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])


def _orbit_scene(rng: np.random.Generator):
    prims: list[Primitive] = []
    ground_half = float(rng.uniform(6.0, 10.0))
    prims.append(Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], ground_half, ground_half, _material(rng, (0.3, 1.0))))
    size = float(rng.uniform(0.35, 0.7))
    main, r0 = _object(rng, (0.0, 0.0), size)
    prims.append(main)
    tops = [main]
    n_extra = int(rng.integers(0, 3))
    for _ in range(n_extra):
        ang = rng.uniform(0, 2 * math.pi)
        s = size * rng.uniform(0.4, 0.7)
        dist = r0 + s * 1.3 + rng.uniform(0.05, 0.4)
        obj, _ = _object(rng, (dist * math.cos(ang), dist * math.sin(ang)), s)
        prims.append(obj)
        tops.append(obj)
    # distant clutter so the background has structure (CO3D is shot in real rooms)
    for _ in range(int(rng.integers(1, 4))):
        ang = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(5.0, ground_half - 0.5)
        obj, _ = _object(rng, (dist * math.cos(ang), dist * math.sin(ang)), float(rng.uniform(0.5, 1.2)), "box")
        prims.append(obj)
    target_z = float(main.center[2]) * rng.uniform(0.6, 1.0)
    radius = float(rng.uniform(1.7, 2.8)) * (size / 0.5) + 0.5
    elev = math.radians(rng.uniform(10, 45))
    az0 = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(0.5 * math.pi, 1.4 * math.pi) * rng.choice([-1.0, 1.0])
    wob = dict(fr=rng.uniform(0.5, 2.0), pr=rng.uniform(0, 2 * math.pi), ar=rng.uniform(0.02, 0.08),
               fh=rng.uniform(0.5, 2.0), ph=rng.uniform(0, 2 * math.pi), ah=rng.uniform(0.02, 0.08))
    jitter = rng.normal(0, 0.05, 3)

    def path(s: np.ndarray):
        az = az0 + sweep * s
        rad = radius * (1 + wob["ar"] * np.sin(2 * math.pi * wob["fr"] * s + wob["pr"]))
        z = target_z + rad * math.sin(elev) + radius * wob["ah"] * np.sin(2 * math.pi * wob["fh"] * s + wob["ph"])
        eye = np.stack([rad * math.cos(elev) * np.cos(az), rad * math.cos(elev) * np.sin(az), np.maximum(z, 0.15)], -1)
        tgt = np.broadcast_to(np.array([jitter[0], jitter[1], target_z + jitter[2]]), eye.shape)
        return eye, tgt

    scene = Scene(prims, _light(rng), ambient=float(rng.uniform(0.3, 0.45)),
                  sky_top=_t([0.35, 0.55, 0.9]), sky_bottom=_t([0.8, 0.88, 0.97]))
    return scene, path


def _walk_scene(rng: np.random.Generator):
    lx, ly = float(rng.uniform(3.0, 6.0)), float(rng.uniform(3.0, 6.0))
    wall_h = float(rng.uniform(2.4, 3.4))
    prims: list[Primitive] = [Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], lx, ly, _material(rng, (0.3, 0.8)))]
    for cx, cy, ax, half in ((lx, 0, (0, 1, 0), ly), (-lx, 0, (0, -1, 0), ly), (0, ly, (-1, 0, 0), lx), (0, -ly, (1, 0, 0), lx)):
        # u along the wall, v up: normal = u x v points into or out of the room (two-sided shading anyway)
        prims.append(Plane([cx, cy, wall_h / 2], ax, [0, 0, 1], half, wall_h / 2, _material(rng, (0.2, 0.8))))
    if rng.uniform() < 0.3:
        prims.append(Plane([0, 0, wall_h], [1, 0, 0], [0, -1, 0], lx, ly, _material(rng, (0.4, 1.0))))
    # camera path: a smooth partial loop around the room centre
    a, b = 0.55 * lx, 0.55 * ly
    th0 = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(0.5 * math.pi, 1.1 * math.pi) * rng.choice([-1.0, 1.0])
    p2, p3 = rng.uniform(0, 2 * math.pi, 2)
    a2, a3 = rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.1)
    height = float(rng.uniform(1.3, 1.7))
    inward = math.radians(rng.uniform(15, 55))
    pitch = math.radians(rng.uniform(-15, 3))
    yaw_amp, yaw_f, yaw_p = math.radians(rng.uniform(3, 12)), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * math.pi)
    sgn = 1.0 if sweep > 0 else -1.0

    def pos(s: np.ndarray) -> np.ndarray:
        th = th0 + sweep * s
        rr = 1 + a2 * np.sin(2 * th + p2) + a3 * np.sin(3 * th + p3)
        z = height + 0.04 * np.sin(2 * math.pi * 3 * s)
        return np.stack([a * rr * np.cos(th), b * rr * np.sin(th), z * np.ones_like(th)], -1)

    def path(s: np.ndarray):
        eye = pos(s)
        ds = 1e-4
        tang = pos(s + ds) - pos(s - ds)
        heading = np.arctan2(tang[:, 1], tang[:, 0])
        # turn towards the room centre (left for a counter-clockwise loop)
        heading = heading + sgn * inward + yaw_amp * np.sin(2 * math.pi * yaw_f * s + yaw_p)
        fwd = np.stack([np.cos(heading) * math.cos(pitch), np.sin(heading) * math.cos(pitch),
                        np.full_like(heading, math.sin(pitch))], -1)
        return eye, eye + fwd

    # objects: rejection-sampled away from the camera path and from each other
    path_xy = pos(np.linspace(-0.05, 1.05, 240))[:, :2]
    placed: list[tuple[float, float, float]] = []
    n_obj = int(rng.integers(4, 9))
    for _ in range(200):
        if len(placed) >= n_obj:
            break
        size = float(rng.uniform(0.25, 0.7))
        reach = size * 1.8  # upper bound of any object's footprint radius
        x = rng.uniform(-lx + reach, lx - reach) if lx > reach else 0.0
        y = rng.uniform(-ly + reach, ly - reach) if ly > reach else 0.0
        if np.min(np.hypot(path_xy[:, 0] - x, path_xy[:, 1] - y)) < reach + 0.45:
            continue
        if any(math.hypot(x - px, y - py) < reach + pr + 0.1 for px, py, pr in placed):
            continue
        obj, _ = _object(rng, (x, y), size)
        prims.append(obj)
        placed.append((x, y, reach))
    scene = Scene(prims, _light(rng), ambient=float(rng.uniform(0.4, 0.55)),
                  sky_top=_t([0.4, 0.6, 0.92]), sky_bottom=_t([0.82, 0.9, 0.98]))
    return scene, path


def make_scene(family: str, seed: int):
    """The scene of ``(family, seed)`` and its camera path ``s in [0,1] -> (eye [N,3], target [N,3])``."""
    if family not in FAMILIES:
        raise ValueError(f"synthetic family must be one of {FAMILIES}, got {family!r}")
    rng = _rng(family, seed)
    return _orbit_scene(rng) if family == "orbit" else _walk_scene(rng)


def generate_clip(
    family: str = "orbit",
    seed: int = 0,
    num_frames: int = 81,
    hw: tuple[int, int] = (64, 112),
    fov_deg: float = 60.0,
) -> Clip:
    """Render one synthetic video with exact ground truth.

    ``fov_deg`` is the horizontal field of view. Returns a Clip with images,
    exact depth (z, 0 on sky), valid (False on sky), world points, intrinsics
    (principal point at the image centre), world->camera extrinsics,
    ``frame_ids = 0..T-1`` and ``confidence = 1``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"hw must be positive, got {hw}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg}")
    scene, path = make_scene(family, seed)
    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    eye, tgt = path(s)
    E = look_at(torch.from_numpy(np.ascontiguousarray(eye)), torch.from_numpy(np.ascontiguousarray(tgt)))
    K = make_intrinsics((h, w), fov_deg, num_frames)
    out = render(scene, E, K, (h, w))
    params = {"family": family, "seed": seed, "num_frames": num_frames, "hw": [h, w], "fov_deg": fov_deg}
    return Clip(
        images=out["images"].float(),
        depth=out["depth"].float(),
        valid=out["valid"],
        intrinsics=K.float(),
        extrinsics=E.float(),
        frame_ids=torch.arange(num_frames, dtype=torch.long),
        confidence=torch.ones(num_frames, h, w),
        points=out["points"].float(),
        meta={
            "dataset": "synthetic",
            "sequence": f"{family}_{seed:05d}",
            "category": family,
            "source": "synthetic:" + json.dumps(params, sort_keys=True),
        },
    )


# ----------------------------------------------------------------------------- dataset writer


def write_synthetic_dataset(
    root: str | Path,
    num_videos: int,
    families: Sequence[str] = FAMILIES,
    num_frames: int = 81,
    hw: tuple[int, int] = (64, 112),
    seed: int = 0,
    test_fraction: float = 0.1,
    progress: bool = True,
    fov_deg: float = 60.0,
) -> Path:
    """Render ``num_videos`` videos into the native layout (:mod:`vidprobe.data.native`).

    Video ``i`` has family ``families[i % len(families)]`` and seed ``seed + i``
    (id ``f"{family}_{seed+i:05d}"``). Resumable: finished videos (labels file
    present and readable, all frames present) are skipped; a root written with
    other generator parameters is refused. Returns ``root``.
    """
    from tqdm.auto import tqdm

    from vidprobe.data.base import DatasetError, split_videos
    from vidprobe.data.native import DATASET_JSON, is_video_complete, read_dataset_json, write_dataset_json, write_video

    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    families = list(families)
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"synthetic family must be one of {FAMILIES}, got {fam!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    gen = {"name": "vidprobe.data.synthetic", "families": families, "num_frames": int(num_frames),
           "hw": [int(hw[0]), int(hw[1])], "seed": int(seed), "fov_deg": float(fov_deg)}
    ids = [f"{families[i % len(families)]}_{seed + i:05d}" for i in range(num_videos)]
    dj = root / DATASET_JSON
    if dj.exists():
        old = read_dataset_json(root)
        old_gen = {k: v for k, v in old.get("generator", {}).items() if k != "num_videos"}
        if old_gen != gen:
            raise DatasetError(
                f"{dj}: field 'generator': this directory was written with {old_gen}, not {gen}; "
                "use another output directory"
            )
    splits = split_videos(ids, test_fraction=test_fraction, seed=seed)
    gen_full = dict(gen, num_videos=int(num_videos))
    write_dataset_json(root, ids, splits, generator=gen_full, complete=False)
    skipped = 0
    for vid in tqdm(ids, desc="synthetic videos", disable=not progress, unit="video"):
        fam, s = vid.rsplit("_", 1)
        if is_video_complete(root / vid, num_frames, (int(hw[0]), int(hw[1]))):
            skipped += 1
            continue
        clip = generate_clip(fam, int(s), num_frames=num_frames, hw=hw, fov_deg=fov_deg)
        write_video(root / vid, clip, labeler="exact (vidprobe.data.synthetic)")
    write_dataset_json(root, ids, splits, generator=gen_full, complete=True)
    return root
