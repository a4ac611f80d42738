"""Open any supported dataset directory by looking at what is in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidprobe.data.base import DatasetError, VideoDataset

__all__ = ["detect_format", "open_dataset"]

_LOOKED_FOR = (
    "  - vidprobe-native: <root>/dataset.json with \"format\": \"vidprobe-native\" (write one with `vidprobe prepare synthetic`)\n"
    "  - CO3Dv2: <root>/<category>/frame_annotations.jgz\n"
    "  - DL3DV: <root>/<scene>/transforms.json or <root>/<group>/<scene>/transforms.json"
)


def detect_format(path: str | Path) -> str:
    """``"native"``, ``"co3d"`` or ``"dl3dv"``; DatasetError listing what was looked for otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    dj = root / "dataset.json"
    if dj.is_file():
        try:
            fmt = json.loads(dj.read_text()).get("format")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise DatasetError(f"{dj}: invalid JSON or not an object ({e})") from e
        if fmt == "vidprobe-native":
            return "native"
        raise DatasetError(f"{dj}: field 'format': expected 'vidprobe-native', got {fmt!r}")
    if any(root.glob("*/frame_annotations.jgz")):
        return "co3d"
    if any(root.glob("*/transforms.json")) or any(root.glob("*/*/transforms.json")):
        return "dl3dv"
    hint = ""
    if (root / "frame_annotations.jgz").is_file():
        hint = f"\n(hint: {root} looks like one CO3D category; pass its parent folder)"
    elif (root / "transforms.json").is_file():
        hint = f"\n(hint: {root} looks like one DL3DV scene; pass its parent folder)"
    raise DatasetError(f"{root}: not a recognised dataset; looked for:\n{_LOOKED_FOR}{hint}")


def open_dataset(path: str | Path, labels_dir: str | Path | None = None, **kw: Any) -> VideoDataset:
    """Open a dataset directory as a :class:`VideoDataset`, detecting its format.

    ``labels_dir`` (any format) takes the ground truth from the labels files of `vidprobe label`;
    other keyword arguments go to the reader (:class:`~vidprobe.data.co3d.Co3dDataset`,
    :class:`~vidprobe.data.dl3dv.Dl3dvDataset`, :class:`~vidprobe.data.native.NativeDataset`).
    """
    fmt = detect_format(path)
    if fmt == "native":
        from vidprobe.data.native import NativeDataset

        return NativeDataset(path, labels_dir=labels_dir, **kw)
    if fmt == "co3d":
        from vidprobe.data.co3d import Co3dDataset

        return Co3dDataset(path, labels_dir=labels_dir, **kw)
    from vidprobe.data.dl3dv import Dl3dvDataset

    return Dl3dvDataset(path, labels_dir=labels_dir, **kw)
