"""Synthetic scene layouts and camera paths of the two families, deterministic from ``(family, seed)``.

* ``orbit`` (CO3D-like): one to three objects on a textured ground plane
  (plus a few distant clutter boxes), the camera circles them at a random
  radius and elevation with a slight radius/height wobble, looking at the
  object.
* ``walk`` (DL3DV-like): a room-sized layout (floor, four walls, sometimes a
  ceiling, several objects); the camera moves along a smooth path through
  the room, looking roughly ahead and inward.

:func:`make_scene` returns the :class:`~vidprobe.data.synthetic_scene.Scene`
and its camera path ``s [N] in [0, 1] -> (eye [N,3], target [N,3])`` (world
units, z-up). Neither depends on the resolution or the frame count. Every
random draw comes from one generator seeded with ``(seed, crc32(family))``,
in a fixed order: changing that order changes every synthetic dataset.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from vidprobe.data.synthetic_scene import Box, Cylinder, Material, Plane, Primitive, Scene, Sphere, _t

__all__ = ["FAMILIES", "make_scene"]

FAMILIES = ("orbit", "walk")
_NOISE_GRID = 32


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
