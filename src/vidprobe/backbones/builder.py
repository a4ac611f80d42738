"""The one build skeleton every registered backbone goes through.

A family module supplies only what is its own::

    @dataclass
    class MyOptions:                      # its own build options (a dataclass; defaults required)
        clip_len: int = 16

    def make(ctx: BuildContext, own: MyOptions) -> MyBackbone:
        model = load_hf_model(ctx, transformers.MyModel, full_config, TINY)   # or its own loading
        return MyBackbone(ctx.spec, model, ctx.device, ctx.dtype, clip_len=own.clip_len)

    FAMILY = Family("mine", make, options=ENCODER_OPTIONS, own=MyOptions)

    def register_backbones() -> None:    # found and called by vidprobe.backbones (no list to edit)
        FAMILY.register(BackboneSpec(name="mine-base", ...), variant="base")

The skeleton (:meth:`Family.build`) does the shared steps: it refuses an option the backbone does not take
(naming it and listing those it takes), fills in the defaults, checks the ``resize`` kernel, checks that
``height``/``width`` come both or neither, and hands ``make`` a :class:`BuildContext` that resolves the device
(``None``/``"auto"`` -> CUDA when available), the compute dtype (``None`` -> bf16 on CUDA, fp32 elsewhere), the
model id (the caller's or the spec's), tiny / random initialisation and the seed. Loading helpers shared by the
families are in :mod:`vidprobe.backbones.loading`.

Registration binds a family to a spec and a variant: the registered factory (:class:`BackboneFactory`) declares its
options (name -> default) in ``spec.options``, which ``vidprobe extract --backbone-arg`` and sweep checks read, and as
its ``__signature__``.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, register
from vidprobe.backbones.common import both_or_neither, check_kernel, resolve_device, resolve_dtype, seeded


@dataclass(frozen=True)
class BuildOptions:
    """Build options common to (nearly) every backbone; a family declares which of them it takes."""

    model_id: str | None = None  # hub id, local folder or file (default: the spec's)
    revision: str | None = None  # hub revision (commit / tag) of the weights
    dtype: str | torch.dtype | None = None  # compute dtype: fp32 / fp16 / bf16; None: bf16 on CUDA, else fp32
    device: str | torch.device | None = None  # cpu, cuda, cuda:1; None / "auto": CUDA when available
    tiny: bool = False  # a tiny seeded random model of the same classes (tests, demo; no download)
    random_init: bool = False  # the full architecture with seeded random weights (no download)
    height: int | None = None  # input size fed to the model (both or neither; default: the family's)
    width: int | None = None
    seed: int = 0  # seeds random weights (and a diffusion model's noise)
    resize: str = "bilinear"  # frame resize kernel (vidprobe.backbones.resize)
    config_overrides: dict | None = None  # architecture fields replacing the config's
    offload: bool = False  # keep the VAE (and image encoder) on the CPU between uses
    cache_dir: str | None = None  # where the empty-prompt embedding is cached (default $VIDPROBE_CACHE)
    text_embeds: str | None = None  # a precomputed empty-prompt embedding (safetensors)


COMMON_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(BuildOptions)}

#: the options of every model (controls take fewer)
MODEL_OPTIONS: tuple[str, ...] = ("model_id", "revision", "dtype", "device", "tiny", "height", "width", "seed")
#: encoders and 3D experts: also a full-size random init and architecture overrides
ENCODER_OPTIONS: tuple[str, ...] = MODEL_OPTIONS + ("random_init", "config_overrides")
#: diffusion models: resize kernel, offloading and the empty-prompt embedding
DIFFUSION_OPTIONS: tuple[str, ...] = MODEL_OPTIONS + ("offload", "text_embeds", "cache_dir", "resize")


@dataclass(frozen=True)
class NoOptions:
    """A family without options of its own."""


@dataclass
class BuildContext:
    """What a family's ``make`` builds from: the spec, its variant and the options, resolved on demand."""

    spec: BackboneSpec
    variant: Any
    options: BuildOptions
    hw: tuple[int, int] | None = None  # (height, width) when the caller gave them
    _device: torch.device | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.options.device)
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return resolve_dtype(self.options.dtype, self.device)

    @property
    def seed(self) -> int:
        return int(self.options.seed)

    @property
    def tiny(self) -> bool:
        return bool(self.options.tiny)

    @property
    def random(self) -> bool:
        """Random weights: ``tiny`` or ``random_init``."""
        return bool(self.options.tiny or self.options.random_init)

    @property
    def model_id(self) -> str | None:
        """The weights to load: the caller's ``model_id`` or the spec's."""
        return self.options.model_id or self.spec.model_id

    @property
    def loaded_id(self) -> str | None:
        """The model id the backbone reports: None for random weights."""
        return None if self.random else self.model_id

    def input_hw(self, tiny_default: tuple[int, int] | None = None) -> tuple[int, int]:
        """The caller's (height, width), else ``tiny_default`` for a tiny model, else the spec's input size."""
        if self.hw is not None:
            return self.hw
        if self.tiny and tiny_default is not None:
            return tiny_default
        return self.spec.input_hw

    def config(self, full: Any, tiny: Any) -> Any:
        """A dataclass config: ``tiny`` for a tiny model, else ``full``, with ``config_overrides`` replaced."""
        return dataclasses.replace(tiny if self.tiny else full, **(self.options.config_overrides or {}))

    def seeded(self):
        """``with ctx.seeded():`` -- the random init of this build, without touching the caller's RNG."""
        return seeded(self.seed)


class Family:
    """A model family: which common options it takes, its own options, and ``make(ctx, own) -> Backbone``."""

    def __init__(
        self,
        name: str,
        make: Callable[[BuildContext, Any], Any],
        options: Sequence[str] = MODEL_OPTIONS,
        own: type = NoOptions,
        defaults: Mapping[str, Any] | None = None,
    ):
        unknown = [k for k in options if k not in COMMON_DEFAULTS]
        if unknown:
            raise ValueError(f"family {name!r}: {unknown} are not BuildOptions fields; put them in its own options")
        if not dataclasses.is_dataclass(own):
            raise TypeError(f"family {name!r}: own options must be a dataclass, got {own!r}")
        own_fields = dataclasses.fields(own)
        clash = [f.name for f in own_fields if f.name in COMMON_DEFAULTS]
        if clash:
            raise ValueError(f"family {name!r}: own options {clash} shadow common BuildOptions fields")
        extra = [k for k in (defaults or {}) if k not in options]
        if extra:
            raise ValueError(f"family {name!r}: defaults for options it does not take: {extra}")
        self.name, self.make, self.own = name, make, own
        self.common = tuple(options)
        self._defaults = {k: COMMON_DEFAULTS[k] for k in self.common} | dict(defaults or {})
        for f in own_fields:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ValueError(f"family {name!r}: own option {f.name!r} needs a default")
            self._defaults[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]

    @property
    def options(self) -> dict[str, Any]:
        """Every build option of the family (common first, then its own) -> its default."""
        return dict(self._defaults)

    def signature(self) -> inspect.Signature:
        kw = inspect.Parameter.KEYWORD_ONLY
        return inspect.Signature([inspect.Parameter(k, kw, default=v) for k, v in self._defaults.items()])

    def build(self, spec: BackboneSpec, variant: Any = None, /, **kwargs) -> Any:
        """The skeleton: check and complete the options, resolve the shared ones, ``make`` the backbone."""
        bad = [k for k in kwargs if k not in self._defaults]
        if bad:
            raise TypeError(f"{spec.name}: unexpected build option(s) {', '.join(bad)}; "
                            f"it takes: {', '.join(self._defaults) or 'no options'}")
        values = self._defaults | kwargs
        opts = BuildOptions(**{k: values[k] for k in self.common})
        own = self.own(**{f.name: values[f.name] for f in dataclasses.fields(self.own)})
        if "resize" in self.common:
            check_kernel(opts.resize, spec.name)
        hw = both_or_neither(opts.height, opts.width, spec.name)
        return self.make(BuildContext(spec, variant, opts, hw), own)

    def register(self, spec: BackboneSpec, variant: Any = None) -> BackboneSpec:
        """Register ``spec`` built by this family (with ``variant``); its options are declared on the spec."""
        spec = dataclasses.replace(spec, options=self.options)
        register(spec, BackboneFactory(self, spec, variant))
        return spec


class BackboneFactory:
    """The registered callable of one backbone: ``factory(**options)`` runs its family's skeleton."""

    def __init__(self, family: Family, spec: BackboneSpec, variant: Any = None):
        self.family, self.spec, self.variant = family, spec, variant

    @property
    def options(self) -> dict[str, Any]:
        return self.family.options

    @property
    def __signature__(self) -> inspect.Signature:  # what inspect.signature(factory) reports
        return self.family.signature()

    def __call__(self, **kwargs) -> Any:
        return self.family.build(self.spec, self.variant, **kwargs)

    def __repr__(self) -> str:
        return f"BackboneFactory({self.spec.name!r}, family={self.family.name!r}, variant={self.variant!r})"


__all__ = [
    "BuildOptions", "BuildContext", "Family", "BackboneFactory", "NoOptions", "COMMON_DEFAULTS", "MODEL_OPTIONS",
    "ENCODER_OPTIONS", "DIFFUSION_OPTIONS",
]
