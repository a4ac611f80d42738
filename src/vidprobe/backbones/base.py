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


def registry() -> dict[str, tuple[BackboneSpec, Callable[..., Backbone]]]:
    from vidprobe import backbones  # noqa: F401  (imports every family module)

    return dict(_REGISTRY)


def get_backbone(name: str, **kwargs) -> Backbone:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name][1](**kwargs)


class MissingExtraError(ImportError):
    def __init__(self, package: str, extra: str):
        super().__init__(f"this backbone needs '{package}': install it with  pip install 'vidprobe[{extra}]'")
