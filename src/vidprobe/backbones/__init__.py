"""Backbone adapters: one module per model family, registered by name.

Importing this package imports every family module listed in
``FAMILY_MODULES``; each registers its names with
:func:`vidprobe.backbones.base.register`. To add a family, write one module
that registers its BackboneSpec(s) and append its name to the list.
Family modules import heavy libraries (transformers, diffusers) lazily, inside
their factories, so listing a family costs nothing until it is used.
"""

from __future__ import annotations

import importlib

from vidprobe.backbones.base import (  # noqa: F401
    Backbone,
    BackboneSpec,
    FeatureSet,
    MissingExtraError,
    get_backbone,
    register,
    registry,
)

# Family modules to register. Append new families here (e.g. the diffusion
# models: "vidprobe.backbones.wan", "vidprobe.backbones.cogvideox", ...).
FAMILY_MODULES: list[str] = [
    "vidprobe.backbones.dinov2",
    "vidprobe.backbones.vjepa",
    "vidprobe.backbones.vjepa2",
    "vidprobe.backbones.videomae",
    "vidprobe.backbones.fast3r",
    "vidprobe.backbones.vggt",
    "vidprobe.backbones.wan",
    "vidprobe.backbones.cogvideox",
    "vidprobe.backbones.aether",
    "vidprobe.backbones.opensora",
    "vidprobe.backbones.controls",  # after the families: random-<arch> reuses their builders
]

for _mod in FAMILY_MODULES:
    importlib.import_module(_mod)
