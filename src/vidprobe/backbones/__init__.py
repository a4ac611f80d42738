"""Backbone adapters: one module per model family, registered by name.

The first call of :func:`registry` registers every backbone: each module of the package
that defines ``register_backbones()`` (found by reading the modules' source,
so listing imports no other module) is imported, and its hook is called, in
the order of :func:`family_modules`: by ``REGISTER_ORDER`` (default 0; the
controls use 1, since ``random-<arch>`` reuses the families' registered
builders), then by module name. Adding a family is therefore one file: a
module here with a ``register_backbones()`` (see
:mod:`vidprobe.backbones.builder` and docs/ARCHITECTURE.md). Family modules
import heavy libraries (transformers, diffusers) lazily, inside their
factories, so listing a family costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re

from vidprobe.lazy import lazy_exports

_EXPORTS = {name: "vidprobe.backbones.base" for name in (
    "Backbone", "BackboneSpec", "FeatureSet", "MissingExtraError", "accepted_options", "get_backbone", "register",
    "registry", "unknown_options",
)}

_HOOK = re.compile(r"^def register_backbones\(", re.MULTILINE)


def _defines_hook(fullname: str) -> bool:
    """Whether module ``fullname`` defines ``register_backbones`` at top level (from its source, not importing it)."""
    spec = importlib.util.find_spec(fullname)
    loader = getattr(spec, "loader", None) if spec is not None else None
    source = loader.get_source(fullname) if loader is not None and hasattr(loader, "get_source") else None
    if source is None:  # no source to read (e.g. compiled only): ask the module itself
        return callable(getattr(importlib.import_module(fullname), "register_backbones", None))
    return _HOOK.search(source) is not None


def family_modules(package: str = __name__, path=None) -> list[str]:
    """The modules of ``package`` that register backbones, in registration order (see the module docstring)."""
    found = sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(__path__ if path is None else path)
        if not info.ispkg and _defines_hook(f"{package}.{info.name}")
    )
    order = {name: getattr(importlib.import_module(name), "REGISTER_ORDER", 0) for name in found}
    return sorted(found, key=lambda name: (order[name], name))


ENTRY_POINT_GROUP = "vidprobe.backbones"

#: plugin entry point -> why it was skipped (filled by :func:`load_plugins`)
PLUGIN_ERRORS: dict[str, str] = {}

#: backbone name -> the distribution that registered it (filled by :func:`load_plugins`)
PLUGIN_SOURCES: dict[str, str] = {}

_loaded = False


def load_families() -> None:
    """Register every family (once per process; :func:`vidprobe.backbones.base.registry` calls it)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in family_modules():
        importlib.import_module(name).register_backbones()
    load_plugins()


def load_plugins(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Call every installed plugin's registration hook; returns the names of the backbones they added."""
    import importlib.metadata
    import warnings

    from vidprobe.backbones import base

    added: list[str] = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        label = f"{ep.name} = {ep.value}" + (f" (from {ep.dist.name})" if ep.dist is not None else "")
        before = set(base._REGISTRY)
        try:
            hook = ep.load()
            hook = getattr(hook, "register_backbones", hook)
            if not callable(hook):
                raise TypeError("the entry point names neither a function nor a module with register_backbones()")
            hook()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not hide the others
            for name in set(base._REGISTRY) - before:  # undo a half-done registration
                del base._REGISTRY[name]
            PLUGIN_ERRORS[label] = f"{type(e).__name__}: {e}"
            warnings.warn(f"backbone plugin {label} skipped: {type(e).__name__}: {e}", stacklevel=2)
            continue
        new = sorted(set(base._REGISTRY) - before)
        for name in new:
            PLUGIN_SOURCES[name] = ep.dist.name if ep.dist is not None else ep.value
        added += new
    return added


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
