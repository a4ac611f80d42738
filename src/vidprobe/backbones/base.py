"""The Backbone protocol: any frozen model -> feature maps the probe can read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch


@dataclass
class FeatureSet:
    """Features of one video.

    ``maps[(layer, timestep)]`` is ``[N, h, w, C]``; ``frame_index[t]`` is the
    map ``n`` that serves input frame ``t`` (temporal compression, interleaved
    clips and per-frame models all reduce to this). ``timestep`` is ``None``
    for models without a diffusion time.
    """

    maps: dict[tuple[int, int | None], torch.Tensor]
    frame_index: torch.Tensor  # [T_video] long
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_maps = {v.shape[0] for v in self.maps.values()}
        if len(n_maps) > 1:
            raise ValueError(f"FeatureSet: feature maps disagree on N: {sorted(n_maps)}")
        for key, v in self.maps.items():
            if v.dim() != 4:
                raise ValueError(f"FeatureSet: map {key} must be [N,h,w,C], got {tuple(v.shape)}")
        if self.maps and self.frame_index.numel():
            n = next(iter(n_maps))
            if int(self.frame_index.max()) >= n or int(self.frame_index.min()) < 0:
                raise ValueError(f"FeatureSet: frame_index points outside [0,{n})")


@dataclass
class BackboneSpec:
    """What `vidprobe backbones` lists about a model family/variant."""

    name: str
    family: str
    model_id: str | None  # hub id (None for controls)
    num_layers: int
    default_layer: int
    input_hw: tuple[int, int]  # (H, W) the reference feeds
    num_frames: int | None  # frames per video the reference feeds (None = any)
    frame_layout: str  # e.g. "per-frame", "vae4x", "interleaved 5x16"
    default_timestep: int | None = None
    extras: str | None = None  # pip extra needed, e.g. "hf"
    description: str = ""
    #: build options the factory takes (name -> default), declared by its family
    #: (:mod:`vidprobe.backbones.builder`); None: not declared (the factory's signature tells)
    options: dict[str, Any] | None = None


@runtime_checkable
class Backbone(Protocol):
    spec: BackboneSpec

    def extract(
        self,
        video: torch.Tensor,
        layers: Sequence[int],
        timesteps: Sequence[int | None] = (None,),
        clip: Any | None = None,
    ) -> FeatureSet:
        """``video [T,3,H,W]`` in [0,1] -> FeatureSet for every (layer, timestep).

        ``clip`` (a :class:`vidprobe.data.Clip` of the same frames) is passed
        only to controls that need ground truth (``oracle``); models ignore it.
        """
        ...


# name -> (spec, factory(**kwargs) -> Backbone)
_REGISTRY: dict[str, tuple[BackboneSpec, Callable[..., Backbone]]] = {}


def register(spec: BackboneSpec, factory: Callable[..., Backbone]) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = (spec, factory)


# prefix -> resolve(rest) -> (spec, factory), or "module:function" imported on first use: names "prefix:rest"
# (e.g. "hf:facebook/dinov2-small") are not registered one by one but resolved on lookup
_RESOLVERS: dict[str, Any] = {"hf": "vidprobe.backbones.hf_auto:resolve"}
_RESOLVED: dict[str, tuple[BackboneSpec, Callable[..., Backbone]]] = {}


def register_resolver(prefix: str, resolve: Any) -> None:
    """Names ``f"{prefix}:<rest>"`` resolve to ``resolve(rest) -> (spec, factory)`` on lookup (once per name);
    ``resolve`` may be a ``"module:function"`` string, imported on first use."""
    if prefix in _RESOLVERS:
        raise ValueError(f"backbone name prefix {prefix!r} registered twice")
    _RESOLVERS[prefix] = resolve


class Registry(dict):
    """The registered backbones; a lookup of ``"prefix:rest"`` with a registered prefix resolves that name.

    Iterating lists only the registered names; ``name in reg`` is true for a resolvable prefix, and
    ``reg[name]`` resolves it (errors of the resolver, e.g. a missing config, name the backbone).
    """

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and _prefix(name) in _RESOLVERS)

    def __missing__(self, name: str) -> tuple[BackboneSpec, Callable[..., Backbone]]:
        prefix = _prefix(name) if isinstance(name, str) else None
        if prefix not in _RESOLVERS:
            raise KeyError(name)
        if name not in _RESOLVED:
            resolve = _RESOLVERS[prefix]
            if isinstance(resolve, str):
                import importlib

                module, _, attr = resolve.partition(":")
                resolve = _RESOLVERS[prefix] = getattr(importlib.import_module(module), attr)
            _RESOLVED[name] = resolve(name[len(prefix) + 1:])
        return _RESOLVED[name]


def _prefix(name: str) -> str | None:
    head, sep, _ = name.partition(":")
    return head if sep else None


def _known(reg: dict) -> str:
    return ", ".join(sorted(reg)) + "".join(f", {p}:<name>" for p in sorted(_RESOLVERS))


def registry() -> Registry:
    from vidprobe.backbones import load_families

    load_families()  # imports every family module, once
    return Registry(_REGISTRY)


def accepted_options(spec: BackboneSpec | None, factory: Callable[..., Any]) -> dict[str, Any] | None:
    """Build options a registered backbone takes (name -> default), or None when it takes any.

    Read from ``spec.options`` (declared by the family); a factory registered without declared options
    (an ad-hoc one, e.g. in a test) is asked its signature.
    """
    if spec is not None and spec.options is not None:
        return dict(spec.options)
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in params.items()}


def unknown_options(name: str, kwargs: dict[str, Any]) -> list[str]:
    """The keys of ``kwargs`` that backbone ``name``'s builder does not take ([] when it takes them all)."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown backbone {name!r}; known: {_known(reg)}")
    accepted = accepted_options(*reg[name])
    return [] if accepted is None else [k for k in kwargs if k not in accepted]


def unknown_backbone_message(name: str, known: list[str]) -> str:
    """``unknown backbone 'x' (did you mean 'y'?)``: the closest registered names (difflib), else the full list."""
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f"unknown backbone {name!r} (did you mean {' or '.join(repr(c) for c in close)}?); see `vidprobe backbones`"
    return f"unknown backbone {name!r}; known: {', '.join(known) or '(none)'}"


def get_backbone(name: str, **kwargs) -> Backbone:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown backbone {name!r}; known: {_known(reg)}")
    return reg[name][1](**kwargs)


class MissingExtraError(ImportError):
    def __init__(self, package: str, extra: str):
        super().__init__(f"this backbone needs '{package}': install it with  pip install 'vidprobe[{extra}]'")
