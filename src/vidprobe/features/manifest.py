"""The feature store's manifest: the store-wide settings, the (layer, timestep) keys, and their checks.

``<root>/manifest.json``::

    {"format": "vidprobe-feature-store/1", "vidprobe_version": ..., "created": ..., "updated": ...,
     "settings": {backbone, model_id, revision, dtype, input_hw, frame_layout, num_frames, backbone_kwargs},
     "keys": [{"layer": 20, "timestep": 749, "tau": 0.251, "dir": "L020_T749"}, ...],
     "sources": ["<dataset name>:<root>", ...], "writers": [<vidprobe versions>],
     "codec": {"spec": "pca:64+int8", "storage_dtype", "params_dir", "fit": {videos, ...}}}   (encoded stores only)

Features are comparable only when every field of :data:`SETTING_FIELDS`
matches (backbone kwargs in :data:`NEUTRAL_KWARGS`, such as ``device``, do
not count): :func:`prepare_store` refuses, naming each differing field, to
add to a store written with other settings. The manifest is rewritten
atomically under a file lock (``manifest.json.lock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from filelock import FileLock

from vidprobe.atomic import atomic_write_bytes
from vidprobe.features.layout import FeatureStoreError, Key, dtype_name, key_dirname, tau_of

__all__ = [
    "STORE_FORMAT",
    "MANIFEST",
    "SETTING_FIELDS",
    "NEUTRAL_KWARGS",
    "store_settings",
    "manifest_lock",
    "read_manifest",
    "prepare_store",
    "update_manifest",
]

STORE_FORMAT = "vidprobe-feature-store/1"
MANIFEST = "manifest.json"

# Settings that, when they differ, make features incomparable; a run with other
# values is refused on an existing store. (The package version is recorded, not compared.)
SETTING_FIELDS = ("backbone", "model_id", "revision", "dtype", "input_hw", "frame_layout", "num_frames", "backbone_kwargs",
                  "tap")  # tap: only in stores written with --tap (absent = None)
# backbone kwargs that do not change the features (only where they are computed)
NEUTRAL_KWARGS = frozenset({"device"})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _canon(v: Any) -> Any:
    """JSON round trip so tuples/lists and int/str keys compare as they are stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def store_settings(
    backbone: str,
    model_id: str | None = None,
    revision: str | None = None,
    dtype: str = "fp16",
    input_hw: Sequence[int] | None = None,
    frame_layout: str | None = None,
    num_frames: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The store-wide settings recorded in (and compared against) the manifest."""
    kw = {k: v for k, v in (backbone_kwargs or {}).items() if k not in NEUTRAL_KWARGS}
    return _canon(
        {
            "backbone": backbone,
            "model_id": model_id,
            "revision": revision,
            "dtype": dtype_name(dtype),
            "input_hw": list(input_hw) if input_hw is not None else None,
            "frame_layout": frame_layout,
            "num_frames": num_frames,
            "backbone_kwargs": kw,
        }
    )


def _settings_diff(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    out = []
    for f in SETTING_FIELDS:
        a, b = have.get(f), want.get(f)
        if f == "backbone_kwargs":
            a = {k: v for k, v in (a or {}).items() if k not in NEUTRAL_KWARGS}
            b = {k: v for k, v in (b or {}).items() if k not in NEUTRAL_KWARGS}
        if _canon(a) != _canon(b):
            out.append(f"{f}: store has {json.dumps(a)}, this run has {json.dumps(b)}")
    return out


def manifest_lock(root: str | Path, timeout: float = 120.0) -> FileLock:
    return FileLock(str(Path(root) / f"{MANIFEST}.lock"), timeout=timeout)


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FeatureStoreError(f"{path}: no manifest: {Path(root)} is not a feature store (run `vidprobe extract` first)")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FeatureStoreError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
        raise FeatureStoreError(f"{path}: field 'format': expected {STORE_FORMAT!r}, got {m.get('format') if isinstance(m, dict) else m!r}")
    for f in ("settings", "keys"):
        if f not in m:
            raise FeatureStoreError(f"{path}: field {f!r} missing")
    return m


def prepare_store(
    root: str | Path,
    settings: dict[str, Any],
    keys: Iterable[Key],
    source: str | None = None,
    codec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the store or check that ``settings`` match it, and add ``keys``; atomic and locked.

    Raises FeatureStoreError naming every differing field when the store was
    written with another model or other settings. ``codec``: the store's codec
    record (:func:`vidprobe.features.codec.codec_record`); a store written with
    another codec is refused the same way.
    """
    from vidprobe import __version__

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys = [(int(layer), None if t is None else int(t)) for layer, t in keys]
    with manifest_lock(root):
        path = root / MANIFEST
        for e in os.scandir(root):  # temp manifests left by a killed writer (we hold the lock)
            if e.name.startswith(f".{MANIFEST}.") and e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
        if path.exists():
            m = read_manifest(root)
            diff = _settings_diff(m["settings"], settings)
            have_codec, want_codec = (m.get("codec") or {}).get("spec"), (codec or {}).get("spec")
            if have_codec != want_codec:
                diff.append(f"codec: store has {json.dumps(have_codec)}, this run has {json.dumps(want_codec)}")
            if diff:
                raise FeatureStoreError(
                    f"{path}: this store was written with other settings; refusing to mix features. "
                    "Differing fields:\n  " + "\n  ".join(diff) + "\nUse another --out directory."
                )
        else:
            m = {"format": STORE_FORMAT, "vidprobe_version": __version__, "created": _now(), "settings": settings, "keys": [], "sources": []}
            if codec:
                m["codec"] = codec
        have = {(k["layer"], k["timestep"]) for k in m["keys"]}
        changed = not path.exists()
        for layer, t in keys:
            if (layer, t) not in have:
                m["keys"].append({"layer": layer, "timestep": t, "tau": tau_of(t), "dir": key_dirname(layer, t)})
                have.add((layer, t))
                changed = True
        m["keys"].sort(key=lambda k: (k["layer"], -1 if k["timestep"] is None else k["timestep"]))
        if source and source not in m.setdefault("sources", []):
            m["sources"].append(source)
            changed = True
        if changed:
            m["updated"] = _now()
            m.setdefault("writers", [])
            if __version__ not in m["writers"]:
                m["writers"].append(__version__)
            atomic_write_bytes(path, (json.dumps(m, indent=2) + "\n").encode(), fsync=True)
        for layer, t in keys:
            (root / key_dirname(layer, t)).mkdir(exist_ok=True)
        return m


def update_manifest(root: str | Path, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the manifest, apply ``mutate`` to it in place and rewrite it atomically, under the manifest lock."""
    root = Path(root)
    with manifest_lock(root):
        m = read_manifest(root)
        mutate(m)
        m["updated"] = _now()
        atomic_write_bytes(root / MANIFEST, (json.dumps(m, indent=2) + "\n").encode(), fsync=True)
        return m
