"""Synthetic scenes: procedural materials, the four ray-traceable primitives, and the :class:`Scene`.

All geometry is float64 (``_DT``). A primitive answers two questions for a
batch of ``N`` rays / points:

* ``intersect(o [N,3], d [N,3]) -> t [N]``: ray parameter of the first hit in
  front of the origin (``t > 1e-6``), ``inf`` when missed;
* ``surface(p [N,3]) -> (normal [N,3], uv [N,2])``: unit normal and texture
  coordinates (world units) at points on the surface.

A :class:`Material` maps texture coordinates to colours ``[N,3]`` in [0,1]
(checker, 3-octave value noise, or stripes blending two colours). The world
is z-up; :class:`Cylinder` is vertical, :class:`Box` is rotated about z.
Rays are cast by :mod:`vidprobe.data.synthetic_render`; scenes are laid out
by :mod:`vidprobe.data.synthetic_layout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Material", "Primitive", "Plane", "Sphere", "Box", "Cylinder", "Scene"]

_DT = torch.float64
_EPS = 1e-6


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
    """What :func:`~vidprobe.data.synthetic_render.cast_rays` renders: primitives, one light, a sky gradient."""

    primitives: list[Primitive]
    light_dir: torch.Tensor  # [3] unit, towards the light
    ambient: float
    sky_top: torch.Tensor  # [3]
    sky_bottom: torch.Tensor  # [3]
