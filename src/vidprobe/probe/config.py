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

Modes (``compat``): every setting whose default depends on the mode
(``clean``, vidprobe's default, or ``reference``, the study's release) is
one row of :data:`MODE_SETTINGS` (probe, loss, optimiser, sampler and
training settings alike); :func:`mode_defaults` gives a section's values
for a mode. An explicit value always overrides the mode's. Presets are
applied first, then the mode, then explicit fields: e.g. in reference mode
every preset keeps 16 heads (the release's probe has 16 at every width).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vidprobe.config import ConfigError, Overrides, Sentinel

HEAD_NAMES = ("points", "depth", "camera")

#: A probe configuration value is invalid (the message names the field): the one config error type.
ProbeConfigError = ConfigError


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
    camera_num_heads: int | None = None  # None: num_heads
    dpt_skip_relu: bool = False  # residual conv units add relu(x) instead of x (mode setting)
    token_init_std: float = 0.02  # std of the camera / register token init (mode setting)
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
            raise ProbeConfigError(f"ProbeConfig.{name}: {msg}", name)

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
        if self.camera_num_heads is not None:
            ch = self.camera_num_heads
            if not isinstance(ch, int) or isinstance(ch, bool) or ch <= 0 or self.token_dim % ch:
                bad("camera_num_heads", f"expected a positive divisor of {self.token_dim} (2 x width) or null, got {ch!r}")
        if not isinstance(self.token_init_std, (int, float)) or isinstance(self.token_init_std, bool) or not self.token_init_std > 0:
            bad("token_init_std", f"expected a number > 0, got {self.token_init_std!r}")
        if not isinstance(self.dpt_skip_relu, bool):
            bad("dpt_skip_relu", f"expected true or false, got {self.dpt_skip_relu!r}")
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
    def camera_heads(self) -> int:
        """Heads of the camera trunk: ``camera_num_heads``, else ``num_heads``."""
        return self.camera_num_heads if self.camera_num_heads is not None else self.num_heads

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
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeConfig:
        """Fields, optionally with ``preset`` and ``compat`` (the mode's probe defaults, under explicit fields)."""
        if not isinstance(d, Mapping):
            raise ProbeConfigError(f"ProbeConfig: expected a mapping, got {type(d).__name__}")
        try:
            d = dict(ProbeSpec(d))
        except ConfigError as e:
            raise ProbeConfigError(f"ProbeConfig: {e}", e.path) from None
        preset = d.pop("preset", None)
        compat = d.pop("compat", None)
        if preset is not None:
            return cls.preset(preset, compat=compat or "clean", **d)
        if compat is not None:
            d = {**mode_defaults("probe", compat), **d}
        if "in_channels" not in d:
            raise ProbeConfigError("ProbeConfig.in_channels: required")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, compat: str = "clean", **overrides: Any) -> ProbeConfig:
        """A named preset (``reference``, ``small``, ``tiny``), then the mode's probe settings, then ``overrides``."""
        if name not in PRESETS:
            import difflib

            close = difflib.get_close_matches(str(name), sorted(PRESETS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProbeConfigError(f"ProbeConfig.preset: unknown preset {name!r}{hint}; choose from {sorted(PRESETS)}")
        try:
            overrides = dict(Overrides.of(cls)(overrides))
        except ConfigError as e:
            raise ProbeConfigError(f"ProbeConfig: {e}", e.path) from None
        if compat not in COMPAT_MODES:
            raise ProbeConfigError(f"ProbeConfig: compat must be one of {COMPAT_MODES}, got {compat!r}")
        kw = dict(PRESETS[name])
        kw.update(mode_defaults("probe", compat))
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

# ------------------------------------------------------------------------------------------ modes
COMPAT_MODES = ("clean", "reference")


#: A mode value meaning "no override": the preset's own value applies.
KEEP: Any = Sentinel("keep", "(preset)")


@dataclass(frozen=True)
class ModeSetting:
    """One named difference between the modes: ``section.field`` takes ``clean`` or ``reference``."""

    section: str  # probe | loss | optim | sampler | train
    field: str
    clean: Any
    reference: Any
    doc: str

    def value(self, compat: str) -> Any:
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat: expected one of {COMPAT_MODES}, got {compat!r}")
        return self.clean if compat == "clean" else self.reference


#: Every setting whose default depends on ``compat`` (the reproduction page lists them).
MODE_SETTINGS: tuple[ModeSetting, ...] = (
    ModeSetting("probe", "dpt_skip_relu", False, True,
                "DPT residual conv units: the skip adds x, or relu(x) (VGGT's in-place ReLU, inherited by the release)"),
    ModeSetting("probe", "token_init_std", 0.02, 1e-6, "std of the initial camera and register tokens"),
    ModeSetting("probe", "num_heads", KEEP, 16,
                "attention heads of the trunk (clean: the preset's, 8 for 'small'; release: 16 at every width)"),
    ModeSetting("probe", "camera_num_heads", KEEP, 16, "attention heads of the camera trunk (clean: num_heads)"),
    ModeSetting("loss", "clamp", None, 100.0,
                "per-pixel errors, their confidence-weighted products and each camera Huber element clamped at this "
                "value (null: no clamp)"),
    ModeSetting("loss", "point_norm", "mean", "clamped",
                "point-map normaliser: mean distance over the valid pixels (at least eps), or "
                "sum / (count + 1e-3) clamped to [1e-3, 1e3]"),
    ModeSetting("loss", "scale_pixels", "valid", "all",
                "ground-truth scale: mean point distance over frame 0's valid pixels, or over all its pixels "
                "(an invalid pixel counts at distance 0)"),
    ModeSetting("loss", "scale_range", None, [1e-3, 1e4],
                "[lo, hi]: a clip whose frame-0 mean distance lies outside is not rescaled (null: always rescaled)"),
    ModeSetting("optim", "decay_all", False, True,
                "weight decay on every parameter, or not on norms, biases and tokens"),
    ModeSetting("optim", "grad_clip", 1.0, 0.0, "gradient-norm clipping threshold (0: none)"),
    ModeSetting("optim", "warmup_rule", "linear", "from_zero",
                "warm-up of W steps: lr (s+1)/W, or s/(W-1) from 0 reaching the base lr at step W-1 "
                "(pl_bolts LinearWarmupCosineAnnealingLR); then cosine to min_lr"),
    ModeSetting("optim", "warmup_frac", 10 / 75, None, "warm-up length as a fraction of the steps: W = round(frac * total)"),
    ModeSetting("optim", "warmup_epochs", None, 10.0,
                "warm-up length in epochs of the run: W = int(warmup_epochs * total / epochs)"),
    ModeSetting("sampler", "method", "uniform", "gaps_then_floor",
                "training frames: uniform over the sets valid after snapping, or gaps >= min_gap drawn on raw "
                "frames then floored to 1+4k (snapped gaps of 4 occur)"),
    ModeSetting("train", "drop_last", False, True,
                "steps per epoch: ceil(videos / global batch) (the last batch padded), or floor (dropped)"),
)

SECTIONS = ("probe", "loss", "optim", "sampler", "train")


def mode_defaults(section: str, compat: str) -> dict[str, Any]:
    """``{field: value}`` of ``section`` in mode ``compat`` (fields whose value is :data:`KEEP` left out)."""
    if section not in SECTIONS:
        raise ValueError(f"mode_defaults: unknown section {section!r}; choose from {SECTIONS}")
    out = {}
    for s in MODE_SETTINGS:
        if s.section == section:
            v = s.value(compat)
            if v is not KEEP:
                out[s.field] = list(v) if isinstance(v, list) else v
    return out


def settings_table() -> list[dict[str, Any]]:
    """Rows ``{setting, clean, reference, doc}`` for the reproduction page."""
    return [{"setting": f"{s.section}.{s.field}", "clean": repr(s.clean) if s.clean is KEEP else s.clean,
             "reference": s.reference, "doc": s.doc} for s in MODE_SETTINGS]


# ------------------------------------------------------------------------------------------ config sections
class ProbeSection(Overrides):
    """The ``probe:`` section of a training config: ``preset`` plus any :class:`ProbeConfig` fields.

    Holds only what was given (and, once the run's mode is resolved, the mode's probe values): the
    probe is the preset, then the mode, then these fields (:meth:`ProbeConfig.preset`). A missing
    ``preset`` means ``reference``. ``in_channels`` and ``out_hw`` come from the run.
    """

    schema = ProbeConfig
    types = {"preset": Literal[tuple(PRESETS)]}
    excluded = {"in_channels": "is set by the run (the channels of the features)",
                "out_hw": "is set by the run: use the top-level out_hw"}


class ProbeSpec(Overrides):
    """What :meth:`ProbeConfig.from_dict` reads: every field, plus ``preset`` and ``compat`` (e.g. a run.json)."""

    schema = ProbeConfig
    types = {"preset": Literal[tuple(PRESETS)], "compat": Literal[COMPAT_MODES]}


__all__ = ["COMPAT_MODES", "HEAD_NAMES", "KEEP", "MODE_SETTINGS", "PRESETS", "ModeSetting", "ProbeConfig",
           "ProbeConfigError", "ProbeSection", "ProbeSpec", "mode_defaults", "settings_table"]
