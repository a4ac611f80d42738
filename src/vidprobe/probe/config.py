"""Probe architecture configuration (:class:`ProbeConfig`) and its presets.

The defaults are the reference probe (``protocol.md``, "Probe"): width
1024, 4 alternating-attention blocks, 16 heads, MLP ratio 4, QK-norm,
LayerScale 0.01, 2D RoPE, 4 register tokens, DPT heads with 256 fusion
features and ``[256, 512, 1024, 1024]`` per-level channels, a camera head
with a 4-block trunk and 4 refinement steps, outputs at 294x518.

Presets (:meth:`ProbeConfig.preset`):

- ``reference``: the defaults above.
- ``small``: width 512 (the protocol's "smaller probe"). Everything that
  scales with the width is halved so the head dimension stays 64 and the
  DPT keeps the same channel ratios: 8 heads, DPT 128 /
  ``[128, 256, 512, 512]``. Depth, trunk, iterations and tokens unchanged.
- ``tiny``: for CPU tests and the demo: width 64, 2 blocks, 4 heads, DPT
  32 / ``[32, 32, 64, 64]`` with a 16-channel last conv, camera trunk of
  2 blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

HEAD_NAMES = ("points", "depth", "camera")


class ProbeConfigError(ValueError):
    """A probe configuration value is invalid (the message names the field)."""


@dataclass
class ProbeConfig:
    in_channels: int
    width: int = 1024
    depth: int = 4  # number of alternating (frame + global) block pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    layerscale: float = 0.01  # LayerScale init; <= 0 disables LayerScale
    qk_norm: bool = True
    rope: bool = True
    rope_base: float = 100.0
    num_registers: int = 4
    out_hw: tuple[int, int] = (294, 518)
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_last_hidden: int = 32  # channels of the last 3x3 conv before the 1x1 output conv
    dpt_pos_embed: bool = True  # parameter-free sin/cos position embedding in the DPT (x0.1)
    dpt_layers: tuple[int, ...] | None = None  # block outputs fed to the 4 DPT levels; None: evenly spaced
    active_heads: tuple[str, ...] = HEAD_NAMES
    camera_depth: int = 4  # trunk blocks
    camera_iters: int = 4  # refinement steps
    camera_qk_norm: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.out_hw = tuple(int(v) for v in self.out_hw)  # type: ignore[assignment]
        self.dpt_out_channels = tuple(int(v) for v in self.dpt_out_channels)  # type: ignore[assignment]
        if isinstance(self.active_heads, str):
            self.active_heads = (self.active_heads,)
        self.active_heads = tuple(self.active_heads)
        if self.dpt_layers is not None:
            self.dpt_layers = tuple(int(v) for v in self.dpt_layers)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(name: str, msg: str) -> None:
            raise ProbeConfigError(f"ProbeConfig.{name}: {msg}")

        for name in ("in_channels", "width", "depth", "num_heads", "dpt_features", "dpt_last_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, f"expected a positive integer, got {v!r}")
        for name in ("num_registers", "camera_depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, f"expected a non-negative integer, got {v!r}")
        if not isinstance(self.camera_iters, int) or self.camera_iters <= 0:
            bad("camera_iters", f"expected a positive integer, got {self.camera_iters!r}")
        if self.width % self.num_heads:
            bad("num_heads", f"width {self.width} is not divisible by {self.num_heads} heads")
        if self.rope and (self.width // self.num_heads) % 4:
            bad("rope", f"2D RoPE needs a head dimension divisible by 4, got {self.width // self.num_heads}")
        if self.mlp_ratio <= 0:
            bad("mlp_ratio", f"expected > 0, got {self.mlp_ratio}")
        if len(self.out_hw) != 2 or min(self.out_hw) <= 0:
            bad("out_hw", f"expected (H, W) with positive sizes, got {self.out_hw}")
        if len(self.dpt_out_channels) != 4 or min(self.dpt_out_channels) <= 0:
            bad("dpt_out_channels", f"expected 4 positive channel counts, got {self.dpt_out_channels}")
        if self.dpt_features % 2:
            bad("dpt_features", f"expected an even number, got {self.dpt_features}")
        if not self.active_heads:
            bad("active_heads", "at least one head must be active")
        unknown = [h for h in self.active_heads if h not in HEAD_NAMES]
        if unknown:
            bad("active_heads", f"unknown heads {unknown}; choose from {list(HEAD_NAMES)}")
        if len(set(self.active_heads)) != len(self.active_heads):
            bad("active_heads", f"duplicate entries in {self.active_heads}")
        if self.dpt_layers is not None:
            if len(self.dpt_layers) != 4:
                bad("dpt_layers", f"expected 4 block indices, got {self.dpt_layers}")
            if any(not 0 <= i < self.depth for i in self.dpt_layers):
                bad("dpt_layers", f"indices must lie in [0, {self.depth}), got {self.dpt_layers}")

    # --------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def token_dim(self) -> int:
        """Width of each block output fed to the heads (frame || global)."""
        return 2 * self.width

    @property
    def dpt_layer_indices(self) -> tuple[int, ...]:
        """Which block outputs feed the 4 DPT levels.

        Explicit ``dpt_layers`` if given, otherwise 4 evenly spaced indices
        over ``range(depth)`` (rounded): depth 4 -> (0, 1, 2, 3), the
        reference; depth 2 -> (0, 0, 1, 1); depth 24 -> (0, 8, 15, 23).
        """
        if self.dpt_layers is not None:
            return tuple(self.dpt_layers)
        if self.depth == 1:
            return (0, 0, 0, 0)
        return tuple(int(round(k * (self.depth - 1) / 3)) for k in range(4))

    # ---------------------------------------------------------------- (de)ser
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeConfig:
        if not isinstance(d, dict):
            raise ProbeConfigError(f"ProbeConfig: expected a mapping, got {type(d).__name__}")
        d = dict(d)
        preset = d.pop("preset", None)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ProbeConfigError(f"ProbeConfig: unknown fields {unknown}; known: {sorted(names)}")
        if preset is not None:
            return cls.preset(preset, **d)
        if "in_channels" not in d:
            raise ProbeConfigError("ProbeConfig.in_channels: required")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ProbeConfig:
        """A named preset (``reference``, ``small``, ``tiny``) with field overrides."""
        if name not in PRESETS:
            raise ProbeConfigError(f"ProbeConfig.preset: unknown preset {name!r}; choose from {sorted(PRESETS)}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ProbeConfigError(f"ProbeConfig: unknown fields {unknown}; known: {sorted(names)}")
        kw = dict(PRESETS[name])
        kw.update(overrides)
        if "in_channels" not in kw:
            raise ProbeConfigError("ProbeConfig.in_channels: required")
        return cls(**kw)


PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},
    "small": {"width": 512, "num_heads": 8, "dpt_features": 128, "dpt_out_channels": (128, 256, 512, 512)},
    "tiny": {
        "width": 64,
        "depth": 2,
        "num_heads": 4,
        "dpt_features": 32,
        "dpt_out_channels": (32, 32, 64, 64),
        "dpt_last_hidden": 16,
        "camera_depth": 2,
    },
}

__all__ = ["HEAD_NAMES", "PRESETS", "ProbeConfig", "ProbeConfigError"]
